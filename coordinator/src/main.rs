//! `ferry-coordinator`: plan, migrate and report on DynamoDB export migrations.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ferry_coordinator::cli::main().await
}
