use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Kind, SERIES};

/// The workspace root (this crate is one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `(kind, name)` of every `counter!("…"`, `gauge!("…"` and `histogram!("…"` in the services'
/// sources (the test crates record none of their own).
fn recorded() -> BTreeSet<(&'static str, String)> {
    let mut files = Vec::new();
    for dir in [
        "command-api",
        "query-api",
        "projections",
        "schemas",
        "infra",
        "domain",
    ] {
        rust_sources(&root().join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (macro_name, kind) in [
            ("counter!(", "counter"),
            ("gauge!(", "gauge"),
            ("histogram!(", "histogram"),
        ] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    let name: String = quoted.chars().take_while(|c| *c != '"').collect();
                    // This file's own patterns are not series names.
                    if !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        names.insert((kind, name));
                    }
                }
            }
        }
    }
    names
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

#[test]
fn every_recorded_series_is_described_with_its_kind() {
    let recorded = recorded();
    assert!(
        recorded.len() > 30,
        "the scan found too few series: {recorded:?}"
    );
    for (kind, name) in &recorded {
        let described = SERIES.iter().find(|(n, ..)| n == name);
        let Some((_, described_kind, _, help)) = described else {
            panic!("{kind} {name} is recorded but has no entry in SERIES");
        };
        assert_eq!(kind_name(*described_kind), *kind, "{name}");
        assert!(help.len() > 10, "{name} needs a real description");
    }
}

#[test]
fn series_names_are_unique_and_follow_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for (name, kind, _, _) in SERIES {
        assert!(seen.insert(*name), "{name} is listed twice");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        if *kind == Kind::Counter {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        } else {
            assert!(!name.ends_with("_total"), "{name} is not a counter");
        }
    }
}

#[test]
fn every_series_is_documented_in_the_operations_guide() {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let missing: Vec<&str> = SERIES
        .iter()
        .map(|(name, ..)| *name)
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not list: {missing:?}"
    );
}

#[test]
fn every_described_series_is_recorded_somewhere() {
    let recorded: BTreeSet<String> = recorded().into_iter().map(|(_, name)| name).collect();
    // The process metrics are recorded by the metrics-process collector, not by name here.
    let unrecorded: Vec<&str> = SERIES
        .iter()
        .map(|(name, ..)| *name)
        .filter(|name| !name.starts_with("process_") || name.starts_with("process_manager_"))
        .filter(|name| !recorded.contains(*name))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "described but never recorded: {unrecorded:?}"
    );
}
