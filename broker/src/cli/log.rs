//! `switchyard log verify`: offline check of the embedded log.

use super::Failure;
use std::path::PathBuf;
use switchyard_broker::log;

/// `switchyard log ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LogCommand {
    /// Check every record of every segment (checksums, contiguous offsets)
    /// without changing anything. Run it on a stopped broker's data
    /// directory; exits 1 naming the file and byte position of the first
    /// corruption.
    Verify {
        /// Data directory.
        #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
}

pub(super) fn run(command: LogCommand) -> Result<(), Failure> {
    match command {
        LogCommand::Verify { data_dir } => {
            let report = log::verify(&data_dir)?;
            let mut records = 0;
            for (topic, partition, check) in &report {
                records += check.records;
                let torn = match &check.torn_tail {
                    Some((file, position)) => format!(
                        "; torn tail at byte {position} of {} (truncated at next start)",
                        file.display()
                    ),
                    None => String::new(),
                };
                println!(
                    "{topic}/{partition}: {} records in {} segment(s){torn}",
                    check.records, check.segments
                );
            }
            println!(
                "ok: {records} records in {} partition(s) verified",
                report.len()
            );
            Ok(())
        }
    }
}
