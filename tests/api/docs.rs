//! The documentation says what this build does. The configuration reference and
//! `.env.example` list exactly what the settings read (a variable read but not documented
//! fails, and so does a documented one the service ignores); docs/, deploy/ and the README
//! speak of the product as it is (no issue numbers, nothing "planned"); and every measured
//! figure in the README is one `docs/benchmarks.md` states, so a new measurement is
//! written down in one place.

use std::path::{Path, PathBuf};

use realtime_service::config::Settings;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The variables of the `| `VAR` | default | meaning |` rows.
fn documented() -> Vec<String> {
    read("docs/configuration.md")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let (var, _) = rest.split_once('`')?;
            var.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| var.to_owned())
        })
        .collect()
}

#[test]
fn every_variable_read_is_in_the_configuration_reference_and_env_example() {
    let documented = documented();
    let example = read(".env.example");
    let mut missing = Vec::new();
    for var in Settings::VARIABLES {
        if !documented.iter().any(|d| d == var) {
            missing.push(format!("{var}: not in docs/configuration.md"));
        }
        let listed = example.lines().any(|l| {
            l.trim_start_matches('#')
                .trim_start()
                .strip_prefix(var)
                .is_some_and(|rest| rest.starts_with('='))
        });
        if !listed {
            missing.push(format!("{var}: not in .env.example"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn every_documented_variable_is_read() {
    let ignored: Vec<String> = documented()
        .into_iter()
        .filter(|var| !Settings::VARIABLES.contains(&var.as_str()))
        .collect();
    assert!(
        ignored.is_empty(),
        "documented but not read by the service: {ignored:?}"
    );
}

/// Every file under `dir` (recursively), as a path relative to the repository root.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root().join(dir)];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path: PathBuf = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(rel) = path.strip_prefix(root()) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Mentions of an issue by number ("issue 8", "issues 7 to 9", "issue-8", "issue #8") and
/// of anything "planned", as `line: text`.
fn time_travel(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let lower = line.to_lowercase();
        let numbered_issue = lower.match_indices("issue").any(|(at, _)| {
            let rest = lower[at + "issue".len()..].trim_start_matches('s');
            let rest = rest.trim_start_matches([' ', '-', '#']);
            rest.starts_with(|c: char| c.is_ascii_digit())
        });
        if numbered_issue || lower.contains("planned") {
            found.push(format!("{}: {}", n + 1, line.trim()));
        }
    }
    found
}

#[test]
fn the_time_travel_check_catches_what_it_should() {
    for bad in [
        "until the ledgers of issue 8 land",
        "The issue-8 comparison",
        "issues 7 to 9 merged",
        "see Issue #12",
        "a variable marked (planned)",
    ] {
        assert_eq!(time_travel(bad).len(), 1, "{bad}");
    }
    for fine in [
        "open an issue with the log lines",
        "issued 3 tickets",
        "lands in (2, 2.5]",
    ] {
        assert!(time_travel(fine).is_empty(), "{fine}");
    }
}

#[test]
fn docs_deploy_and_readme_name_no_issue_number_and_nothing_planned() {
    let mut paths = files_under("docs");
    paths.extend(files_under("deploy"));
    paths.push("README.md".to_owned());
    paths.push(".env.example".to_owned());
    let mut found = Vec::new();
    for path in paths {
        // Binary files (none today) have nothing to say.
        let Ok(text) = std::fs::read_to_string(root().join(&path)) else {
            continue;
        };
        found.extend(
            time_travel(&text)
                .into_iter()
                .map(|hit| format!("{path}:{hit}")),
        );
    }
    assert!(
        found.is_empty(),
        "docs speak of the product as it is today (no issue numbers, nothing planned):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_page_that_uses_ns_sets_it() {
    let mut paths = files_under("docs");
    paths.extend(files_under("deploy"));
    paths.push("README.md".to_owned());
    let undefined: Vec<String> = paths
        .into_iter()
        .filter(|path| {
            std::fs::read_to_string(root().join(path))
                .is_ok_and(|text| text.contains("$NS") && !text.contains("NS="))
        })
        .collect();
    assert!(
        undefined.is_empty(),
        "commands use $NS but the page never sets NS=...: {undefined:?}"
    );
}

/// Units of measured figures. A figure with one of these in the README must be a figure of
/// docs/benchmarks.md.
const MEASURED_UNITS: [&str; 5] = ["µs", "us", "MiB", "MB", "x"];

/// The numbers of measured figures in `text` ("54 MiB", "0.26-0.49 ms", "1.05-1.08x"): a
/// number (or range) followed by a unit of [`MEASURED_UNITS`], or a decimal number followed
/// by `ms` or `s`. Code blocks are skipped; configured limits ("1 MiB" bodies) are not
/// measurements.
fn measured_figures(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let starts_number = chars[i].is_ascii_digit()
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '.'));
            if !starts_number {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit() || chars[j] == '.' || chars[j] == '-')
            {
                j += 1;
            }
            let number: String = chars[i..j].iter().collect::<String>();
            let number = number.trim_end_matches(['.', '-']).to_owned();
            let mut k = j;
            while k < chars.len() && chars[k] == ' ' {
                k += 1;
            }
            let unit: String = chars[k..]
                .iter()
                .take_while(|c| c.is_alphabetic())
                .collect();
            let measured = MEASURED_UNITS.contains(&unit.as_str())
                || (number.contains('.') && (unit == "ms" || unit == "s"));
            if measured && format!("{number} {unit}") != "1 MiB" {
                out.extend(number.split('-').map(str::to_owned));
            }
            i = j.max(i + 1);
        }
    }
    out
}

#[test]
fn measured_figures_are_recognised() {
    assert_eq!(
        measured_figures(
            "holds 54 MiB, adds 0.26-0.49 ms at 16 in flight, 1.05-1.08x; up to 1 MiB"
        ),
        ["54", "0.26", "0.49", "1.05", "1.08"]
    );
    assert_eq!(
        measured_figures("```\ncosts 45 us\n```\n43.7 µs per call, 3 s timeout"),
        ["43.7"]
    );
}

/// The "Current figures" section of docs/benchmarks.md: what the README may quote.
fn current_figures() -> String {
    let benchmarks = read("docs/benchmarks.md");
    let start = benchmarks
        .find("### Current figures")
        .expect("docs/benchmarks.md has a \"### Current figures\" section");
    let section = &benchmarks[start..];
    let end = section[3..].find("\n#").map_or(section.len(), |at| at + 3);
    section[..end].to_owned()
}

/// Whether `number` stands on its own in `text` ("54" in "54 MiB", not in "254" or "5.54").
fn has_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before_ok = !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_digit() || c == '.');
        let mut after = text[at + number.len()..].chars();
        let after_ok = match after.next() {
            Some(c) if c.is_ascii_digit() => false,
            Some('.') => !after.next().is_some_and(|c| c.is_ascii_digit()),
            _ => true,
        };
        before_ok && after_ok
    })
}

#[test]
fn numbers_are_matched_whole() {
    assert!(has_number("18 / 32 / 54 MiB", "54"));
    assert!(has_number("1.63-1.97.", "1.97"));
    assert!(!has_number("254 MiB", "54"));
    assert!(!has_number("5.54 MiB", "54"));
    assert!(!has_number("54.2 µs", "54"));
}

#[test]
fn every_measured_figure_in_the_readme_comes_from_benchmarks_md() {
    let current = current_figures();
    let unsourced: Vec<String> = measured_figures(&read("README.md"))
        .into_iter()
        .filter(|n| !has_number(&current, n))
        .collect();
    assert!(
        unsourced.is_empty(),
        "README figures not in docs/benchmarks.md \"Current figures\" (write them there, quote them here): {unsourced:?}"
    );
}
