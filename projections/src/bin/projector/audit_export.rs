//! `projector audit-export`: the audit log to a file as JSON lines or CSV, filtered like
//! `GET /v1/audit/export` and resumable by position, with progress on standard error.

use std::process::ExitCode;

use anyhow::{bail, Context};
use infra::settings::Settings;

use crate::connect;

#[derive(clap::Args)]
pub struct AuditExport {
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// The file to write (created, or with `--resume` appended to).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Only `user`, `order` or `payment` events.
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Events that occurred at or after this instant (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// Events that occurred before this instant (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Start after this global position.
    #[arg(long, conflicts_with = "resume")]
    after_position: Option<i64>,
    /// Append to an existing export after its last record.
    #[arg(long)]
    resume: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header; the payload column is JSON.
    Csv,
}

fn rfc3339(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 date-time: {e}"))
}

pub async fn audit_export(settings: Settings, args: AuditExport) -> anyhow::Result<ExitCode> {
    use infra::audit_export::{self as export, Filter};
    use std::io::Write;
    if let Some(kind) = &args.aggregate_type {
        if !export::AGGREGATE_TYPES.contains(&kind.as_str()) {
            bail!("--aggregate-type must be user, order or payment");
        }
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            bail!("--from must be before --to");
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(!args.resume)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    // Resumed: after the last whole record; half a line an interrupted export left is cut off.
    let (kept, last_line) = match args.resume {
        true => export::last_complete_line(&mut file)
            .with_context(|| format!("reading the end of {}", args.out.display()))?,
        false => (0, String::new()),
    };
    file.set_len(kept)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(kept))?;
    let mut after = match (args.resume, args.after_position) {
        (true, _) => export::last_position(&last_line).unwrap_or(0),
        (false, Some(n)) if n >= 0 => n,
        (false, Some(_)) => bail!("--after-position must be 0 or more"),
        (false, None) => 0,
    };
    let mut out = std::io::BufWriter::new(file);
    if args.format == Format::Csv && kept == 0 {
        write!(out, "{}\r\n", export::CSV_HEADER)?;
    }
    let pool = connect(&settings).await?;
    let filter = Filter {
        aggregate_type: args.aggregate_type,
        from: args.from,
        to: args.to,
    };
    let mut cursor = match export::cursor(&pool, after).await {
        Err(export::CursorError::Unknown(_)) => bail!(
            "no event is at position {after}: resume after a position an export wrote, or from 0"
        ),
        result => result.context("finding where to resume")?,
    };
    let total = export::count(&pool, &filter, cursor).await?;
    let mut progress = infra::progress::Progress::new("audit-export", total as u64);
    let render = match args.format {
        Format::Jsonl => export::AuditEntry::json_line,
        Format::Csv => export::AuditEntry::csv_line,
    };
    loop {
        let page = export::page(&pool, &filter, cursor, export::PAGE, render)
            .await
            .context("reading the audit log")?;
        let Some(last) = page.last else { break };
        after = last;
        cursor = Some(after);
        out.write_all(page.text.as_bytes())?;
        progress.advance(page.entries);
    }
    out.flush()?;
    pool.close().await;
    let written = progress.finish();
    infra::outln!(
        "wrote {written} entries to {}; the last is at position {after}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
