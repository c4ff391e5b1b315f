use std::path::PathBuf;

use super::*;

fn test_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A one-namespace TOML policy with `extra` appended to its rule.
fn toml_with(extra: &str) -> String {
    format!("[namespaces.chat]\nowner = \"family\"\nsubscribe = true\n{extra}\n")
}

fn rule_error(text: &str) -> (String, RuleProblem, String) {
    let error = match ChannelPolicy::from_toml_str(text, "/etc/p.toml") {
        Err(error) => error,
        Ok(policy) => panic!("expected a rule error, got {policy:?}"),
    };
    match &error {
        PolicyError::Rule {
            namespace, problem, ..
        } => (namespace.clone(), problem.clone(), error.to_string()),
        other => panic!("expected a rule error, got {other:?}"),
    }
}

fn parse_error(result: Result<ChannelPolicy, PolicyError>) -> String {
    match result {
        Err(e @ PolicyError::Parse { .. }) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn builtin_file_parses() {
    let policy = ChannelPolicy::from_toml_str(super::super::BUILTIN_TOML, "builtin")
        .expect("config/channel-policy.toml is valid");
    assert_eq!(
        policy.namespaces().collect::<Vec<_>>(),
        [
            "admin",
            "broadcast",
            "chat",
            "diary",
            "family",
            "flowcoach",
            "notifications"
        ]
    );
    assert_eq!(ChannelPolicy::builtin(), policy);
}

#[test]
fn toml_and_json_forms_of_the_same_policy_are_equal() {
    let from_toml = ChannelPolicy::load(&test_data("channel-policy-small.toml"))
        .expect("test TOML policy loads");
    let from_json = ChannelPolicy::load(&test_data("channel-policy-small.json"))
        .expect("test JSON policy loads");
    assert_eq!(from_toml, from_json);
    assert_eq!(
        from_json.namespaces().collect::<Vec<_>>(),
        ["news", "room", "secret"]
    );
}

#[test]
fn the_builtin_policy_has_a_json_twin() {
    let json = r#"{"namespaces": {
        "family": {"owner": "family", "subscribe": true, "publish": true, "publish_max_bytes": 16384},
        "chat": {"owner": "family", "subscribe": true, "publish": true, "publish_max_bytes": 16384,
                 "closed_by": ["feature_lock_chat", "screen_time_lock"], "subscription_ttl_s": 900},
        "diary": {"owner": "user", "subscribe": true, "publish": true, "publish_max_bytes": 32768,
                  "closed_by": ["feature_lock_diary", "screen_time_lock"], "subscription_ttl_s": 900},
        "flowcoach": {"owner": "user", "subscribe": true, "publish": false, "min_tier": "pro",
                      "closed_by": ["feature_lock_flowcoach", "screen_time_lock"], "subscription_ttl_s": 900},
        "notifications": {"owner": "user", "subscribe": true, "publish": false},
        "admin": {"owner": "none", "require_admin": true, "subscribe": true, "publish": true,
                  "publish_max_bytes": 16384},
        "broadcast": {"owner": "none", "subscribe": true, "publish": false, "allow_degraded": true}
    }}"#;
    let policy = ChannelPolicy::from_json_str(json, "inline").expect("valid JSON policy");
    assert_eq!(policy, ChannelPolicy::builtin());
}

#[test]
fn defaults_apply_when_fields_are_left_out() {
    let policy =
        ChannelPolicy::from_toml_str(&toml_with("publish = true\npublish_max_bytes = 10"), "t")
            .expect("valid");
    let rule = &policy.namespaces["chat"];
    assert!(!rule.require_admin);
    assert!(!rule.allow_degraded);
    assert!(rule.closed_by.is_empty());
    assert_eq!(rule.min_tier, None);
    assert_eq!(rule.subscription_ttl, None);
    assert_eq!(
        rule.publish,
        Some(PublishLimit {
            max_bytes: 10,
            require_object: true
        })
    );
}

#[test]
fn publish_without_a_limit_names_namespace_and_field() {
    for extra in ["publish = true", "publish = true\npublish_max_bytes = 0"] {
        let (namespace, problem, message) = rule_error(&toml_with(extra));
        assert_eq!(namespace, "chat");
        assert_eq!(problem, RuleProblem::PublishWithoutLimit);
        assert_eq!(problem.field(), "publish_max_bytes");
        assert_eq!(
            message,
            "channel policy /etc/p.toml: namespace \"chat\": \
             publish = true needs publish_max_bytes > 0"
        );
    }
}

#[test]
fn a_limit_without_publish_is_refused() {
    let (namespace, problem, message) =
        rule_error(&toml_with("publish = false\npublish_max_bytes = 100"));
    assert_eq!(namespace, "chat");
    assert_eq!(problem, RuleProblem::LimitWithoutPublish);
    assert!(message.contains("publish_max_bytes"), "{message}");
}

#[test]
fn ttl_out_of_range_names_namespace_and_field() {
    for ttl in [0, MAX_TTL_S + 1] {
        let (namespace, problem, message) = rule_error(&toml_with(&format!(
            "publish = false\nsubscription_ttl_s = {ttl}"
        )));
        assert_eq!(namespace, "chat");
        assert_eq!(problem, RuleProblem::TtlOutOfRange(ttl));
        assert!(message.contains("namespace \"chat\""), "{message}");
        assert!(message.contains("subscription_ttl_s"), "{message}");
    }
    for ttl in [1, MAX_TTL_S] {
        let text = toml_with(&format!("publish = false\nsubscription_ttl_s = {ttl}"));
        assert!(
            ChannelPolicy::from_toml_str(&text, "t").is_ok(),
            "ttl {ttl}"
        );
    }
}

#[test]
fn ttl_without_subscribe_is_refused() {
    let text = "[namespaces.feed]\nowner = \"user\"\nsubscribe = false\npublish = false\n\
                subscription_ttl_s = 60\n";
    let (namespace, problem, message) = rule_error(text);
    assert_eq!(namespace, "feed");
    assert_eq!(problem, RuleProblem::TtlWithoutSubscribe);
    assert!(message.contains("subscription_ttl_s"), "{message}");
}

#[test]
fn min_tier_unspecified_is_refused() {
    let (namespace, problem, message) =
        rule_error(&toml_with("publish = false\nmin_tier = \"unspecified\""));
    assert_eq!(namespace, "chat");
    assert_eq!(problem, RuleProblem::MinTierUnspecified);
    assert!(message.contains("min_tier"), "{message}");
}

#[test]
fn bad_namespace_names_are_refused() {
    let cases = [
        ("\"\"", RuleProblem::EmptyName),
        ("\"a:b\"", RuleProblem::BadNameChar(':')),
        ("\"a b\"", RuleProblem::BadNameChar(' ')),
        ("\"a\\tb\"", RuleProblem::BadNameChar('\t')),
        ("\"#a\"", RuleProblem::BadNameChar('#')),
        ("\"$a\"", RuleProblem::BadNameChar('$')),
    ];
    for (key, expected) in cases {
        let text =
            format!("[namespaces.{key}]\nowner = \"none\"\nsubscribe = true\npublish = false\n");
        let (_, problem, message) = rule_error(&text);
        assert_eq!(problem, expected, "{key}");
        assert_eq!(problem.field(), "name");
        assert!(
            message.starts_with("channel policy /etc/p.toml: namespace "),
            "{message}"
        );
    }
}

#[test]
fn no_namespaces_is_refused() {
    for (result, origin) in [
        (
            ChannelPolicy::from_toml_str("[namespaces]\n", "a.toml"),
            "a.toml",
        ),
        (
            ChannelPolicy::from_json_str(r#"{"namespaces":{}}"#, "a.json"),
            "a.json",
        ),
    ] {
        match result {
            Err(e @ PolicyError::NoNamespaces { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!("channel policy {origin}: no namespaces defined")
                );
            }
            other => panic!("expected NoNamespaces, got {other:?}"),
        }
    }
    let message = parse_error(ChannelPolicy::from_toml_str("", "empty.toml"));
    assert!(message.contains("missing field `namespaces`"), "{message}");
}

#[test]
fn unknown_field_is_rejected_with_its_location() {
    let message = parse_error(ChannelPolicy::from_toml_str(
        &toml_with("publish = false\nrequire_admn = true"),
        "/etc/p.toml",
    ));
    assert!(
        message.starts_with("channel policy /etc/p.toml: invalid TOML: "),
        "{message}"
    );
    assert!(
        message.contains("unknown field `require_admn`"),
        "{message}"
    );
    assert!(message.contains("at line 5 column 1"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let message = parse_error(ChannelPolicy::from_json_str(
        "{\"namespaces\": {\"chat\": {\"owner\": \"user\", \"subscribe\": true,\n\"publish\": false, \"ttl\": 5}}}",
        "/etc/p.json",
    ));
    assert!(
        message.starts_with("channel policy /etc/p.json: invalid JSON: "),
        "{message}"
    );
    assert!(message.contains("unknown field `ttl`"), "{message}");
    assert!(message.contains("at line 2"), "{message}");

    let message = parse_error(ChannelPolicy::from_json_str(
        r#"{"namespaces": {}, "version": 2}"#,
        "top.json",
    ));
    assert!(message.contains("unknown field `version`"), "{message}");
}

#[test]
fn unknown_lock_is_rejected() {
    let message = parse_error(ChannelPolicy::from_toml_str(
        &toml_with("publish = false\nclosed_by = [\"feature_lock_games\"]"),
        "p.toml",
    ));
    assert!(message.contains("feature_lock_games"), "{message}");
    assert!(message.contains("at line 5"), "{message}");
}

#[test]
fn unknown_owner_and_tier_are_rejected() {
    let text = "[namespaces.x]\nowner = \"group\"\nsubscribe = true\npublish = false\n";
    assert!(parse_error(ChannelPolicy::from_toml_str(text, "p.toml")).contains("group"));
    let message = parse_error(ChannelPolicy::from_toml_str(
        &toml_with("publish = false\nmin_tier = \"gold\""),
        "p.toml",
    ));
    assert!(message.contains("gold"), "{message}");
}

#[test]
fn required_fields_are_required() {
    let message = parse_error(ChannelPolicy::from_toml_str(
        "[namespaces.chat]\nowner = \"family\"\nsubscribe = true\n",
        "p.toml",
    ));
    assert!(message.contains("missing field `publish`"), "{message}");
}

#[test]
fn duplicate_json_namespace_is_rejected() {
    let json = r#"{"namespaces": {
        "a": {"owner": "none", "subscribe": true, "publish": false},
        "a": {"owner": "none", "subscribe": false, "publish": false}
    }}"#;
    let message = parse_error(ChannelPolicy::from_json_str(json, "dup.json"));
    assert!(
        message.contains("namespace \"a\" is defined twice"),
        "{message}"
    );
}

#[test]
fn malformed_text_reports_line_and_column() {
    let message = parse_error(ChannelPolicy::from_toml_str(
        "[namespaces.chat]\nowner = \n",
        "bad.toml",
    ));
    assert!(message.contains("at line 2 column"), "{message}");
    let message = parse_error(ChannelPolicy::from_json_str(
        "{\"namespaces\": ",
        "bad.json",
    ));
    assert!(message.contains("at line 1 column"), "{message}");
}

#[test]
fn bad_extension_is_rejected_naming_the_path() {
    for name in ["policy.yaml", "policy", "policy.TOML.bak"] {
        match ChannelPolicy::load(Path::new(name)) {
            Err(e @ PolicyError::UnsupportedFormat { .. }) => {
                assert!(
                    e.to_string()
                        .starts_with(&format!("channel policy {name}: ")),
                    "{e}"
                );
            }
            other => panic!("{name}: expected UnsupportedFormat, got {other:?}"),
        }
    }
}

#[test]
fn missing_file_error_names_the_path() {
    let path = test_data("no-such-policy.toml");
    match ChannelPolicy::load(&path) {
        Err(e @ PolicyError::Read { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("cannot read the file"), "{message}");
        }
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn line_column_counts_from_one_in_characters() {
    let text = "ab\ncé d";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 3), (2, 1));
    // 'é' is two bytes but one column.
    assert_eq!(line_column(text, text.len() - 1), (2, 4));
}
