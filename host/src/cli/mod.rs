//! The `nacre` command line.

pub mod attest;
pub mod host_check;
pub mod measure;
pub mod package;
pub mod run;
pub mod verify;

use clap::{Parser, Subcommand};

/// Exit status when the host stopped the guest for breaking a memory rule.
pub const EXIT_MEMORY_VIOLATION: u8 = 120;
/// Exit status when the guest firmware asked to be terminated.
pub const EXIT_GUEST_TERMINATED: u8 = 121;
/// Exit status for nacre's own errors (bad usage, bad image, no KVM).
pub const EXIT_NACRE_ERROR: u8 = 125;

/// nacre: run static Linux apps as confidential unikernel VMs.
#[derive(Debug, Parser)]
#[command(name = "nacre", version, about, long_about = None, after_help = "\
Exit status of `nacre run`: the app's own status (0-255), or 120 when the host stopped
the guest for breaking a confidential-memory rule, 121 when the guest firmware asked to
be terminated, 125 for nacre's own errors. `nacre verify`: 0 verified, 1 a check
failed, 125 unusable input. `nacre host-check`: 0 the platform can run here, 1 it
cannot.

Start with `nacre demo`.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Package a static x86-64 Linux executable with the firmware into one measured IGVM image.
    Package(package::PackageArgs),
    /// Boot an image as a confidential VM; its stdout/stderr are nacre's, its exit status nacre's.
    Run(run::RunArgs),
    /// Print the launch measurement of an image on each platform (SEV-SNP launch digest, TDX MRTD).
    Measure(measure::MeasureArgs),
    /// Boot an image until its firmware produces evidence of the launch for a nonce; write it.
    Attest(attest::AttestArgs),
    /// Verify an SEV-SNP attestation report or a TDX quote offline, check by check.
    Verify(verify::VerifyArgs),
    /// Package and run the bundled example app, printing each step.
    Demo(DemoArgs),
    /// Check whether this host can run each platform, check by check (exit 0: it can).
    HostCheck(host_check::HostCheckArgs),
}

/// Arguments of `nacre demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(
        long,
        value_name = "N",
        value_parser = run::parse_cpus,
        default_value_t = 1,
        hide_default_value = true,
        help = run::CPUS_HELP
    )]
    pub cpus: u32,
}
