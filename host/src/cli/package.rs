//! `nacre package`.

use anyhow::{bail, Context};
use std::path::PathBuf;

/// Arguments of `nacre package`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  gcc -static -O2 hello.c -o hello\n  nacre package hello -o hello.igvm --arg world --env GREETING=hi"
)]
pub struct PackageArgs {
    /// The app: a statically linked x86-64 Linux executable (static or static-pie).
    pub app: PathBuf,
    /// Where to write the image.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// An argument for the app (repeat for more); the first argument (argv 0) is the app's file name.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable for the app as KEY=VALUE (repeat for more).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// How the firmware validates (SNP) or accepts (TDX) memory: in 2 MiB pages, falling
    /// back to 4 KiB where the host's page size requires it, or always page by page
    /// (slower; the host then splits its 2 MiB RMP entries, as it must for guests that
    /// work at 4 KiB). Part of the measured configuration.
    #[arg(long, value_enum, default_value = "2m")]
    pub page_validation: PageValidation,
}

/// `--page-validation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PageValidation {
    /// 2 MiB at a time where aligned.
    #[value(name = "2m")]
    TwoM,
    /// One 4 KiB page at a time.
    #[value(name = "4k")]
    FourK,
}

impl PageValidation {
    /// The boot flags this choice sets.
    pub fn flags(self) -> u32 {
        match self {
            Self::TwoM => 0,
            Self::FourK => nacre_shared_abi::boot::BOOT_FLAG_VALIDATE_4K,
        }
    }
}

/// Build the image bytes (measured: the firmware, app, arguments, environment).
pub fn build(
    app_bytes: &[u8],
    argv0: &str,
    args: &[String],
    env: &[String],
    flags: u32,
) -> anyhow::Result<Vec<u8>> {
    for e in env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env {e:?} is not KEY=VALUE");
        }
    }
    nacre_loader::check_app_elf(app_bytes)?;
    let mut argv = vec![argv0.as_bytes().to_vec()];
    argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    let input = nacre_loader::PackageInput {
        firmware_elf: crate::FIRMWARE_ELF,
        app_elf: app_bytes,
        args: argv,
        env: env.iter().map(|e| e.as_bytes().to_vec()).collect(),
        flags,
    };
    Ok(nacre_loader::build_image(&input)?)
}

/// Run `nacre package`.
pub fn run(a: &PackageArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.app)
        .with_context(|| format!("cannot read the app {}", a.app.display()))?;
    let argv0 = a
        .app
        .file_name()
        .map_or_else(|| "app".to_string(), |n| n.to_string_lossy().into_owned());
    let image = build(&bytes, &argv0, &a.args, &a.env, a.page_validation.flags())
        .with_context(|| format!("cannot package {}", a.app.display()))?;
    let tmp = a.output.with_extension("igvm.partial");
    std::fs::write(&tmp, &image).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "nacre: packaged {} ({} bytes) into {}",
        a.app.display(),
        image.len(),
        a.output.display()
    );
    Ok(())
}
