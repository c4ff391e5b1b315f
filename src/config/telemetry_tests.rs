//! Telemetry settings: OTEL_TRACES_SAMPLER(_ARG), the OTLP endpoints, LOG_LEVEL.

use super::tests::*;
use super::*;

fn sampling_of(extra: &[(&'static str, &'static str)]) -> Sampling {
    with(extra)
        .unwrap_or_else(|e| panic!("rejected {extra:?}: {e}"))
        .telemetry
        .sampling
}

#[test]
fn samplers_map_as_the_opentelemetry_spec_defines_them() {
    use RootSampling::*;
    type Env = &'static [(&'static str, &'static str)];
    let cases: &[(Env, bool, RootSampling)] = &[
        // Unset: 1 % of roots (every Centrifugo callback is one), the caller's decision else.
        (&[], true, Ratio(0.01)),
        (&[("OTEL_TRACES_SAMPLER_ARG", "0.25")], true, Ratio(0.25)),
        (&[("OTEL_TRACES_SAMPLER", "always_on")], false, AlwaysOn),
        (&[("OTEL_TRACES_SAMPLER", "always_off")], false, AlwaysOff),
        (
            &[("OTEL_TRACES_SAMPLER", "traceidratio")],
            false,
            Ratio(1.0),
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ],
            false,
            Ratio(0.5),
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "parentbased_always_on")],
            true,
            AlwaysOn,
        ),
        (
            &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
            true,
            AlwaysOff,
        ),
        // A named ratio sampler without its argument: the spec's 1.0.
        (
            &[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")],
            true,
            Ratio(1.0),
        ),
        (
            &[
                ("OTEL_TRACES_SAMPLER", " parentbased_traceidratio "),
                ("OTEL_TRACES_SAMPLER_ARG", "0"),
            ],
            true,
            Ratio(0.0),
        ),
        // The argument is ignored by samplers that take none.
        (
            &[
                ("OTEL_TRACES_SAMPLER", "always_on"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ],
            false,
            AlwaysOn,
        ),
        // Empty is unset.
        (&[("OTEL_TRACES_SAMPLER", "")], true, Ratio(0.01)),
    ];
    for (env, parent_based, root) in cases {
        assert_eq!(
            sampling_of(env),
            Sampling {
                parent_based: *parent_based,
                root: *root
            },
            "{env:?}"
        );
    }
}

#[test]
fn unknown_samplers_and_bad_ratios_name_their_variable() {
    for sampler in ["jaeger_remote", "xray", "AlwaysOn", "ratio"] {
        let err = err_text(&[("OTEL_TRACES_SAMPLER", sampler)]);
        assert!(err.starts_with("OTEL_TRACES_SAMPLER:"), "{sampler}: {err}");
        assert!(
            err.contains("parentbased_traceidratio"),
            "lists the names: {err}"
        );
    }
    for arg in ["1.5", "-0.1", "NaN", "inf", "one"] {
        let err = err_text(&[("OTEL_TRACES_SAMPLER_ARG", arg)]);
        assert!(err.starts_with("OTEL_TRACES_SAMPLER_ARG:"), "{arg}: {err}");
    }
}

#[test]
fn the_traces_endpoint_wins_over_the_generic_one() {
    let endpoint = |extra: &[(&'static str, &'static str)]| {
        with(extra).expect("valid").telemetry.traces_endpoint
    };
    assert_eq!(endpoint(&[]), None);
    assert_eq!(
        endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]),
        Some(TracesEndpoint {
            url: "http://collector:4318/v1/traces".into(),
            var: "OTEL_EXPORTER_OTLP_ENDPOINT"
        })
    );
    assert_eq!(
        endpoint(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom/path"
            ),
        ]),
        Some(TracesEndpoint {
            url: "http://traces:4318/custom/path".into(),
            var: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        })
    );
    let disabled = with(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://traces:4318/v1/traces",
        ),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .expect("valid")
    .telemetry;
    assert_eq!(disabled.traces_endpoint, None);
    assert!(!disabled.otel_enabled);
}

#[test]
fn log_level_accepts_levels_and_directives_normalised() {
    for (raw, normalised) in [
        ("info", "info"),
        ("DEBUG", "DEBUG"),
        ("", "info"),
        (" , ", "info"),
        (
            "warn, realtime_service=debug",
            "warn,realtime_service=debug",
        ),
        (
            "realtime_service::identity=trace,h2=off",
            "realtime_service::identity=trace,h2=off",
        ),
        ("[proxy]=debug", "[proxy]=debug"),
        (
            "[proxy{proxy=connect}]=trace",
            "[proxy{proxy=connect}]=trace",
        ),
        ("realtime_service[proxy]", "realtime_service[proxy]"),
        ("3", "3"),
    ] {
        let c = with(&[("LOG_LEVEL", raw)]).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(c.telemetry.log_level, normalised, "{raw:?}");
        tracing_subscriber::EnvFilter::try_new(&c.telemetry.log_level)
            .unwrap_or_else(|e| panic!("EnvFilter refuses {normalised:?}: {e}"));
    }
}

#[test]
fn log_level_refuses_what_envfilter_would_misread() {
    // `verbose` alone is what EnvFilter takes for a target name: every line silently off.
    for raw in [
        "verbose",
        "info,verbose",
        "realtime_service",
        "realtime_service=verbose",
        "realtime_service=",
        "[proxy",
        "=debug",
        "info;debug",
    ] {
        let err = err_text(&[("LOG_LEVEL", raw)]);
        assert!(err.starts_with("LOG_LEVEL:"), "{raw:?}: {err}");
    }
    // Reported with the other problems, not on its own.
    let err = err_text(&[("LOG_LEVEL", "verbose"), ("PUBLISH_BURST", "0")]);
    assert!(
        err.contains("LOG_LEVEL:") && err.contains("PUBLISH_BURST:"),
        "{err}"
    );
}
