//! The `nacre` command line.

pub mod attest;
pub mod host_check;
pub mod measure;
pub mod package;
pub mod run;
pub mod verify;

use clap::{Parser, Subcommand};

/// A command line that is wrong in a way its parser cannot see alone (a value
/// checked against the others): nacre exits with [`EXIT_USAGE`] as for the parser's
/// own errors, having done nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `text` as a message quotes it: in double quotes, control characters escaped, at
/// most [`QUOTED_BYTES`] bytes of it ([`nacre_loader::shown_text`]).
pub fn quoted(text: &str) -> String {
    format!(
        "\"{}\"",
        nacre_loader::shown_text(text.as_bytes(), QUOTED_BYTES)
    )
}

/// The bytes of a value [`quoted`] shows.
pub const QUOTED_BYTES: usize = 60;

/// Write `text` to standard output. A reader that stopped early (`| head`) is no
/// error; any other failure (a full disk, a closed descriptor) is one, named.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the result to standard output")
        }
        _ => Ok(()),
    }
}

/// Exit status when the host stopped the guest for breaking a memory rule.
pub const EXIT_MEMORY_VIOLATION: u8 = 120;
/// Exit status when the guest firmware asked to be terminated.
pub const EXIT_GUEST_TERMINATED: u8 = 121;
/// Exit status for nacre's own errors (bad input, bad image, no KVM).
pub const EXIT_NACRE_ERROR: u8 = 125;
/// Exit status when the command line cannot be parsed: an unknown option, a missing
/// argument, a value an option does not take (clap's usage errors), values that do not go
/// together ([`UsageError`]); nothing is done.
pub const EXIT_USAGE: u8 = 2;

/// `nacre --help` after the options: the exit statuses (README.md's "Exit codes" has
/// the same table) and where to start.
pub const AFTER_HELP: &str = "\
Exit status:
  0    success; nacre verify: every check passed; nacre host-check: the platform
       can run here
  1    nacre verify: a check of the evidence failed; nacre host-check: the
       platform cannot run here
  2    the command line is wrong (an unknown option, a missing argument, a value
       an option does not take, values that do not go together): nothing was done
  120  nacre run: the host stopped the guest for breaking a confidential-memory rule
  121  nacre run: the guest firmware asked to be terminated
  125  nacre's own error: unusable input, a corrupt image, a refused size or output
       path, KVM not usable
When the app ran to its end, nacre run exits with the app's own status (0-255).

Start with `nacre demo`.";

/// nacre: run static Linux apps as confidential unikernel VMs.
#[derive(Debug, Parser)]
#[command(name = "nacre", version, about, long_about = None, after_help = AFTER_HELP)]
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
#[command(after_help = "\
Exit status: 0 when every step worked, 125 when one failed (the reason is on stderr), 2
when the command line is wrong.")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The codes of README.md's "Exit codes" table, in order.
    fn readme_exit_codes() -> Vec<String> {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("### Exit codes")
            .nth(1)
            .expect("README.md has an Exit codes section");
        table
            .lines()
            .skip_while(|l| !l.starts_with("| code"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1))
            .map(|c| c.trim().to_owned())
            .collect()
    }

    #[test]
    fn usage_errors_exit_2_as_documented() {
        for args in [
            &["nacre", "run", "--bogus"][..],
            &["nacre", "frobnicate"],
            &["nacre", "run"],
            &["nacre", "run", "x.igvm", "--cpus", "17"],
            &["nacre", "run", "x.igvm", "--memory", "1X"],
            &["nacre", "run", "x.igvm", "--platform", "sev"],
        ] {
            let e = Cli::try_parse_from(args).expect_err("a usage error");
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{args:?}");
        }
        assert_eq!(
            Cli::try_parse_from(["nacre", "--help"])
                .expect_err("help")
                .exit_code(),
            0
        );
    }

    #[test]
    fn exit_codes_are_listed_alike_in_help_and_readme() {
        let codes = [
            0,
            verify::EXIT_NOT_VERIFIED,
            EXIT_USAGE,
            EXIT_MEMORY_VIOLATION,
            EXIT_GUEST_TERMINATED,
            EXIT_NACRE_ERROR,
        ];
        assert_eq!(host_check::EXIT_CANNOT_RUN, verify::EXIT_NOT_VERIFIED);
        let mut readme: Vec<String> = codes.iter().map(u8::to_string).collect();
        readme.push("the app's own".to_owned());
        assert_eq!(readme_exit_codes(), readme);
        let help = Cli::command().render_long_help().to_string();
        for code in codes {
            assert!(help.contains(&format!("\n  {code:<3}  ")), "{code}: {help}");
        }
        // Every command says how it exits, usage errors included.
        for sub in Cli::command().get_subcommands_mut() {
            let name = sub.get_name().to_owned();
            if name == "help" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(words.contains("Exit status: "), "{name}: {help}");
            assert!(
                words.contains("2 when the command line is wrong"),
                "{name}: {help}"
            );
        }
    }
}
