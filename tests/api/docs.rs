//! The configuration reference and `.env.example` list exactly what the settings read: a
//! variable the service reads but the docs omit is a test failure, and so is a documented
//! variable (not marked "(planned)") that the service ignores.

use realtime_service::config::Settings;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `| `VAR` | default | meaning |` rows: (variable, planned?).
fn documented() -> Vec<(String, bool)> {
    read("docs/configuration.md")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let (var, _) = rest.split_once('`')?;
            var.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| (var.to_owned(), line.trim_end().ends_with("(planned) |")))
        })
        .collect()
}

#[test]
fn every_variable_read_is_in_the_configuration_reference_and_env_example() {
    let documented = documented();
    let example = read(".env.example");
    let mut missing = Vec::new();
    for var in Settings::VARIABLES {
        if !documented.iter().any(|(d, _)| d == var) {
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
fn every_documented_variable_is_read_or_marked_planned() {
    let ignored: Vec<String> = documented()
        .into_iter()
        .filter(|(var, planned)| !planned && !Settings::VARIABLES.contains(&var.as_str()))
        .map(|(var, _)| var)
        .collect();
    assert!(
        ignored.is_empty(),
        "documented without \"(planned)\" but not read by the service: {ignored:?}"
    );
}
