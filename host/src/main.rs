//! The `nacre` command.

use clap::Parser;
use nacre_host::cli::{self, Cli, Command, EXIT_NACRE_ERROR};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Package(a) => cli::package::run(a).map(|()| 0),
        Command::Run(a) => cli::run::run(a, start),
        Command::Measure(a) => cli::measure::run(a).map(|()| 0),
        Command::Verify(a) => cli::verify::run(a),
        Command::Demo => demo(start),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nacre: error: {e:#}");
            ExitCode::from(EXIT_NACRE_ERROR)
        }
    }
}

fn demo(start: Instant) -> anyhow::Result<u8> {
    let dir = std::env::temp_dir().join(format!("nacre-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let image_path = dir.join("hello.igvm");
    eprintln!(
        "nacre demo: 1/3 the bundled app is a static C program (tests/apps/hello.c, {} bytes)",
        nacre_host::DEMO_APP.len()
    );
    let files = cli::package::file_tree("hello", &[])?;
    let image = cli::package::build(nacre_host::DEMO_APP, "hello", &[], &[], &files, 0)?;
    std::fs::write(&image_path, &image)?;
    eprintln!(
        "nacre demo: 2/3 packaged it with the firmware into {} ({} bytes)",
        image_path.display(),
        image.len()
    );
    eprintln!("nacre demo: 3/3 running it on emulated-snp with 256 MiB; its output follows");
    let args = cli::run::RunArgs {
        image: image_path.clone(),
        platform: cli::run::Platform::EmulatedSnp,
        memory: None,
        stats: true,
        stats_json: None,
        strict_memory: false,
    };
    let code = cli::run::run(&args, start)?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("nacre demo: the app exited with status {code}; done");
    Ok(0)
}
