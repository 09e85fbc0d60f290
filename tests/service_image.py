"""services/Dockerfile read as Docker would read it for one service's build arguments, with no
Docker engine: dockerfile-parse splits the instructions and tracks ARG/ENV per stage, and the
build arguments each service needs are derived from the code (the launcher's registry, the
settings' ports, the WeasyPrint packages script), not restated here."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter

from billing_common.settings import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = "services/Dockerfile"
# The Debian packages WeasyPrint needs (the same list `make run` installs on the host).
WEASYPRINT_PACKAGES = tuple(
    re.search(
        r'^packages="([^"]+)"$', (ROOT / "scripts/ensure-weasyprint-libs.sh").read_text(), re.M
    )
    .group(1)  # type: ignore[union-attr]
    .split()
)
# Services whose Python dependencies load system libraries at run time.
SYSTEM_PACKAGES = {"invoice": WEASYPRINT_PACKAGES}


def build_args(service: str) -> dict[str, str]:
    """The build arguments the image of `service` needs; skaffold.yaml and compose.yaml must
    pass exactly these."""
    args = {"SERVICE": service, "PORT": str(DEFAULT_PORTS[service])}
    if service in SYSTEM_PACKAGES:
        args["SYSTEM_PACKAGES"] = " ".join(SYSTEM_PACKAGES[service])
    return args


@dataclass(frozen=True)
class Instruction:
    name: str  # FROM, RUN, COPY, ...
    raw: str  # as written
    value: (
        str  # ${...} resolved with the stage's ARG and ENV values, as Docker (or the shell) would
    )
    args: dict[str, str]
    envs: dict[str, str]


@dataclass(frozen=True)
class Stage:
    name: str
    base: str
    instructions: tuple[Instruction, ...]

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def last(self, name: str) -> Instruction:
        return self.all(name)[-1]


@cache
def stages(service: str) -> tuple[Stage, ...]:
    parser = DockerfileParser(str(ROOT / DOCKERFILE), build_args=build_args(service))
    found: list[Stage] = []
    for item, context in zip(parser.structure, parser.context_structure, strict=True):
        if item["instruction"] == "COMMENT":
            continue
        value = WordSplitter(item["value"], args=context.args, envs=context.envs).dequote()
        instruction = Instruction(
            item["instruction"], item["value"], value, dict(context.args), dict(context.envs)
        )
        if instruction.name == "FROM":
            # An ARG before the first FROM is visible in FROM lines only: the parser resolves those.
            base = parser.parent_images[len(found)]
            found.append(Stage(item["value"].partition(" AS ")[2].strip(), base, ()))
        elif found:
            last = found[-1]
            found[-1] = Stage(last.name, last.base, (*last.instructions, instruction))
    return tuple(found)


def stage(service: str, name: str) -> Stage:
    (found,) = [s for s in stages(service) if s.name == name]
    return found


def final_stage(service: str) -> Stage:
    return stages(service)[-1]


def image_env(service: str) -> dict[str, str]:
    """The ENV the final image carries (PATH aside: it extends the base image's)."""
    envs = final_stage(service).instructions[-1].envs
    return {k: v for k, v in envs.items() if k != "PATH"}


def exec_form(instruction: Instruction) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) form; Docker substitutes nothing in it."""
    text = instruction.raw
    if instruction.name == "HEALTHCHECK":
        text = text[text.index("CMD") + 3 :]
    loaded: list[str] = json.loads(text)
    return loaded


def shell_words(command: str, env: dict[str, str]) -> list[str]:
    """What `sh -c command` runs, for the simple `exec ...` commands of the image."""
    substituted = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), command)
    return shlex.split(substituted)
