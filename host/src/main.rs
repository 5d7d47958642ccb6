//! The `nacre` command.

use clap::Parser;
use nacre_host::cli::{self, Cli, Command, EXIT_NACRE_ERROR, EXIT_USAGE};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Package(a) => cli::package::run(a).map(|()| 0),
        Command::Run(a) => cli::run::run(a, start),
        Command::Measure(a) => cli::measure::run(a).map(|()| 0),
        Command::Attest(a) => cli::attest::run(a).map(|()| 0),
        Command::Verify(a) => cli::verify::run(a),
        Command::Demo(a) => demo(a.cpus, start),
        Command::HostCheck(a) => cli::host_check::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.downcast_ref::<cli::UsageError>().is_some() => {
            nacre_host::say!(
                "nacre: error: {e:#}\n(`nacre help` or --help says what each option takes)"
            );
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            nacre_host::say!("nacre: error: {e:#}");
            ExitCode::from(EXIT_NACRE_ERROR)
        }
    }
}

fn demo(cpus: u32, start: Instant) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    // A folder of its own, made new (never one that was there, nor a link): removed
    // with what the demo wrote into it when the demo ends.
    let dir = tempfile::Builder::new()
        .prefix("nacre-demo-")
        .tempdir()
        .with_context(|| {
            format!(
                "cannot make a folder for the demo in {} (set TMPDIR to a writable one)",
                std::env::temp_dir().display()
            )
        })?;
    demo_in(dir.path(), cpus, start)
}

fn demo_in(dir: &std::path::Path, cpus: u32, start: Instant) -> anyhow::Result<u8> {
    let image_path = dir.join("hello.igvm");
    nacre_host::say!(
        "nacre demo: 1/5 the bundled app is a static C program (tests/apps/hello.c, {} bytes)",
        nacre_host::DEMO_APP.len()
    );
    let files = cli::package::file_tree("hello", &[])?;
    let image = cli::package::build(nacre_host::DEMO_APP, "hello", &[], &[], &files, 0, false)?;
    nacre_host::files::write_output(&image_path, &image)?;
    nacre_host::say!(
        "nacre demo: 2/5 packaged it with the firmware into {} ({} bytes)",
        image_path.display(),
        image.len()
    );
    let vcpus = if cpus == 1 {
        String::new()
    } else {
        format!(" and {cpus} vCPUs")
    };
    // The same --cpus for attest and verify: SEV-SNP measures every vCPU.
    let cpus_arg = if cpus == 1 {
        String::new()
    } else {
        format!(" --cpus {cpus}")
    };
    nacre_host::say!(
        "nacre demo: 3/5 running it on emulated-snp with 256 MiB{vcpus}; its output follows"
    );
    let args = cli::run::RunArgs {
        image: image_path.clone(),
        platform: nacre_host::platform::default_platform(),
        memory: None,
        cpus,
        stats: true,
        stats_json: None,
        strict_memory: false,
        publish: Vec::new(),
    };
    let code = cli::run::run(&args, start)?;
    nacre_host::say!("nacre demo: the app exited with status {code}");

    let mut nonce = [0u8; 32];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| anyhow::anyhow!("cannot make a nonce from the kernel's random source: {e}"))?;
    let nonce = hex::encode(nonce);
    let evidence = dir.join("evidence.json");
    nacre_host::say!(
        "nacre demo: 4/5 a verifier's fresh nonce {nonce}:\n\
         nacre demo:     nacre attest {}{cpus_arg} --nonce <nonce> -o {}",
        image_path.display(),
        evidence.display()
    );
    cli::attest::run(&cli::attest::AttestArgs {
        image: image_path.clone(),
        platform: nacre_host::platform::default_platform(),
        nonce: nonce.clone(),
        output: evidence.clone(),
        memory: None,
        cpus,
        json: false,
        snp_certs: None,
    })?;
    nacre_host::say!(
        "nacre demo: 5/5 checked offline against the image and the nonce:\n\
         nacre demo:     nacre verify {} --image {}{cpus_arg} --nonce <nonce> --allow-emulated",
        evidence.display(),
        image_path.display()
    );
    let verdict = cli::verify::run(&cli::verify::VerifyArgs {
        evidence,
        image: Some(image_path),
        cpus,
        nonce: Some(nonce),
        allow_emulated: true,
        ..cli::verify::VerifyArgs::new(std::path::PathBuf::new())
    })?;
    if verdict != 0 {
        anyhow::bail!("the demo's evidence did not verify");
    }
    nacre_host::say!("nacre demo: done");
    Ok(0)
}
