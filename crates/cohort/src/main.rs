//! The `cohort` binary: one process for the whole customer lifecycle.

mod admin;
mod analyse;
mod cli;
mod data_dir;
mod definitions;
mod demo;
mod experiment;
mod import;
mod journey;
mod query;
mod rfm;
mod segment;
mod serve;

use clap::Parser;

/// glibc's allocator cost 10–15 % of the hot threads' CPU (ingest, lookups) and returns memory
/// to the kernel in a way that stalls the other threads; mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.log_json);
    // Data directories, lake files and exports hold personal data.
    cohort_store::keep_new_files_private();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(args).await,
            cli::Command::Demo(args) => demo::run(args).await,
            cli::Command::Admin(args) => admin::run(args).await,
            cli::Command::Bench(cmd) => cohort_bench::run(cmd).await,
            cli::Command::Import(args) => import::run(args).await,
            cli::Command::Query(args) => query::run(args).await,
            cli::Command::Analyse(args) => analyse::run(args).await,
            cli::Command::Rfm(args) => rfm::run(args).await,
            cli::Command::Flag(args) => definitions::run_flag(args).await,
            cli::Command::Experiment(args) => experiment::run(args).await,
            cli::Command::Journey(args) => journey::run(args).await,
            cli::Command::Segment(args) => {
                segment::run(args, cohort_store::SegmentKind::Segment).await
            }
            cli::Command::Tag(args) => segment::run(args, cohort_store::SegmentKind::Tag).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COHORT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
