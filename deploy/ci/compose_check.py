"""Static checks of deploy/compose/compose.yaml, for a machine without a Docker engine.

The file is validated against the Compose specification's own JSON schema (the one Docker
Compose loads, from the compose-go module at the path given), and then against this
project: every build context, Dockerfile and mounted file exists, every depends_on names a
service, Centrifugo's image is the version the end-to-end suite runs, and the services are
named as the shipped Centrifugo configs address them.

usage: compose_check.py COMPOSE_FILE COMPOSE_SPEC_SCHEMA_JSON E2E_SETUP_SH
Prints `check-compose: N passed, M failed` and exits 1 on any failure.
"""
import json
import os
import re
import sys

import jsonschema
import yaml


def main():
    compose_path, schema_path, setup_path = sys.argv[1:4]
    here = os.path.dirname(os.path.abspath(compose_path))
    results = []

    def check(ok, what):
        results.append((bool(ok), what))
        if not ok:
            print(f"check-compose: FAILED: {what}")

    with open(compose_path) as f:
        doc = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        print(f"check-compose: schema: {'/'.join(map(str, e.path))}: {e.message}")
    check(not errors, "the file matches the Compose specification's schema")

    services = doc.get("services", {})
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = os.path.normpath(os.path.join(here, build["context"]))
            check(os.path.isdir(context), f"{name}: build context {context} exists")
            check(os.path.isfile(os.path.join(context, build.get("dockerfile", "Dockerfile"))),
                  f"{name}: its Dockerfile exists")
        for dep in svc.get("depends_on", []) or []:
            check(dep in services, f"{name}: depends_on {dep} is a service")
        for volume in svc.get("volumes", []) or []:
            # ${VAR:-default}: check the default.
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", volume).split(":")[0]
            if source.startswith("."):
                check(os.path.exists(os.path.join(here, source)), f"{name}: mounted {source} exists")

    with open(setup_path) as f:
        version = re.search(r"^CENTRIFUGO_VERSION=(\S+)", f.read(), re.M).group(1)
    check(services.get("centrifugo", {}).get("image") == f"centrifugo/centrifugo:{version}",
          f"centrifugo runs {version}, the version the end-to-end suite proves")
    # The shipped configs call realtime-service:9730 / :9731 and use redis:6379.
    for needed in ("realtime-service", "redis", "identity-service"):
        check(needed in services, f"a service named {needed}, as the shipped configs address it")
    env = services.get("realtime-service", {}).get("environment", {})
    check(env.get("CENTRIFUGO_PROXY_AUTH") == "static_header", "the service takes stock Centrifugo's static header")
    check(env.get("GRPC_PROXY_LISTEN_PORT") == "9731", "the gRPC listener is on 9731, where config-grpc.json calls")
    check(env.get("IDENTITY_VALIDATE_GRPC_ADDRESS", "").startswith("identity-service:"),
          "the service validates tickets at the stand-in")
    secret = services.get("centrifugo", {}).get("environment", {}).get("CENTRIFUGO_VAR_PROXY_SECRET", "")
    check(secret.startswith("${PROXY_SECRET:?") and env.get("CENTRIFUGO_PROXY_SECRET") == secret,
          "one required PROXY_SECRET feeds both sides")

    passed = sum(ok for ok, _ in results)
    print(f"check-compose: {passed} passed, {len(results) - passed} failed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
