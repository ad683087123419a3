"""Render what a process started from a deploy file would see: its environment and its mounted secrets.

No Docker engine and no cluster are needed (there is neither on the development machines nor in CI), so
this does, for our files, the part of `docker compose` and of the kubelet that decides a container's
environment:

- Compose: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`,
  `$VAR` and `$$` interpolated from the host environment given; `env_file` then `environment` (which
  wins); `secrets` mounted at `/run/secrets/<target>` from a top-level `file:` or `environment:`.
- Kubernetes: the resources a kustomization lists (nested kustomizations included); `envFrom` ConfigMaps
  and Secrets, then `env` with `value` (and `$(VAR)` references), `configMapKeyRef`, `secretKeyRef`,
  `fieldRef`; secret and ConfigMap volumes (with or without `items`, projected too) at their `mountPath`.
  Secrets are not in git: they are the ones the deploy README's `kubectl create secret generic` commands
  create, with the keys those commands give them.

A mounted file is written to a temporary directory and every variable whose value is its path is
pointed there, so the code reads it as it would in the container. A variable ending in `_FILE` that
points at nothing mounted is an error, as it would be at start. Values of secrets are test values: what
matters is which keys exist and where they are mounted.
"""

from __future__ import annotations

import re
import secrets as _random
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
POD_NAME = "whereby-pod-0"  # what a fieldRef (metadata.name) gives in these renders


class RenderError(Exception):
    """The deploy file would not give the process the environment it names (or would not start at all)."""


@dataclass
class Rendered:
    """One process as a deploy file starts it: where it is defined, its command and its environment."""

    where: str
    image: str
    command: list[str]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)  # mounted path -> content

    def materialise(self, directory: Path) -> dict[str, str]:
        """The environment with every mounted path it names replaced by a real file under `directory`."""
        env = dict(self.env)
        for name, value in self.env.items():
            if value in self.files:
                path = directory / re.sub(r"[^A-Za-z0-9_.-]", "_", value.strip("/"))
                path.write_text(self.files[value])
                env[name] = str(path)
            elif name.endswith("_FILE") and value:
                raise RenderError(f"{self.where}: {name}={value} is not a mounted file (no secret or volume there)")
        return env


# ----------------------------------------------------------------------------------------------- Compose

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, host: Mapping[str, str], where: str = "") -> str:
    """Compose's variable substitution in one string (see the module docstring for the forms)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        value = host.get(name)
        unset_or_empty = not value if op.startswith(":") else value is None
        if op.endswith("-"):
            return interpolate(arg, host, where) if unset_or_empty else str(value)
        if op.endswith("?"):
            if unset_or_empty:
                raise RenderError(f"{where}: required variable {name} is missing a value: {arg}")
            return str(value)
        if op.endswith("+"):
            return "" if unset_or_empty else interpolate(arg, host, where)
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def _interpolate_all(node: Any, host: Mapping[str, str], where: str) -> Any:
    if isinstance(node, str):
        return interpolate(node, host, where)
    if isinstance(node, list):
        return [_interpolate_all(item, host, where) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_all(value, host, f"{where}.{key}") for key, value in node.items()}
    return node


def _env_file(path: Path, host: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = interpolate(value.strip().strip("'\""), host, str(path))
    return values


def _environment(spec: Any, host: Mapping[str, str]) -> dict[str, str]:
    """A service's `environment`, as a mapping or a list; a name without a value comes from the host."""
    items = spec.items() if isinstance(spec, dict) else (entry.partition("=")[::2] for entry in spec or [])
    env: dict[str, str] = {}
    for key, value in items:
        if value is None or (not isinstance(spec, dict) and value == "" and key in host):
            if key in host:
                env[key] = host[key]
            continue
        env[key] = "true" if value is True else "false" if value is False else str(value)
    return env


def compose_services(path: Path, host: Mapping[str, str]) -> dict[str, Rendered]:
    """Every service of a compose file, rendered with the host environment `host`."""
    raw = yaml.safe_load(path.read_text())
    doc = _interpolate_all(raw, host, path.name)
    defined = doc.get("secrets") or {}
    out = {}
    for name, service in doc["services"].items():
        where = f"{path.name}: {name}"
        env: dict[str, str] = {}
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            file_path = path.parent / (entry["path"] if isinstance(entry, dict) else entry)
            if file_path.is_file():
                env.update(_env_file(file_path, host))
            elif not isinstance(entry, dict) or entry.get("required", True):
                raise RenderError(f"{where}: env_file {file_path} does not exist")
        env.update(_environment(service.get("environment"), host))
        files = {}
        for ref in service.get("secrets") or []:
            source = ref if isinstance(ref, str) else ref["source"]
            target = source if isinstance(ref, str) else ref.get("target", source)
            secret = defined.get(source)
            if secret is None:
                raise RenderError(f"{where}: secret {source!r} is not defined at the top level")
            if "environment" in secret:
                if not host.get(secret["environment"]):
                    raise RenderError(f"{where}: secret {source!r} needs {secret['environment']} set on the host")
                content = host[secret["environment"]]
            else:
                secret_file = path.parent / secret["file"]
                if not secret_file.is_file():
                    raise RenderError(f"{where}: secret {source!r}: no file {secret_file}")
                content = secret_file.read_text()
            files[str(PurePosixPath("/run/secrets") / target)] = content
        command = service.get("command") or []
        image = service.get("image", "")
        command = command.split() if isinstance(command, str) else list(command)
        out[name] = Rendered(where, image, command, env, files)
    return out


# -------------------------------------------------------------------------------------------- Kubernetes


def kustomize_resources(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file, document) for every resource `kustomization.yaml` in `directory` lists, recursively."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if target.is_dir():
            found += kustomize_resources(target)
            continue
        found += [(str(target.relative_to(directory)), doc) for doc in yaml.safe_load_all(target.read_text()) if doc]
    return found


def documented_secrets(readme: Path) -> dict[str, dict[str, str]]:
    """Secret name -> {key: test value} for each `kubectl ... create secret generic` command in `readme`."""
    text = readme.read_text().replace("\\\n", " ")
    created: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if "create secret generic" not in line or not line.lstrip().startswith("kubectl") or "--dry-run" in line:
            continue  # (a --dry-run command shows how to change a Secret; it creates none)
        words = shlex.split(line, comments=True)
        name = words[words.index("generic") + 1]
        keys = created.setdefault(name, {})
        for word in words:
            for flag in ("--from-literal=", "--from-file="):
                if word.startswith(flag):
                    spec = word.removeprefix(flag)
                    key, _, literal = spec.partition("=") if "=" in spec else (PurePosixPath(spec).name, "", "")
                    # A literal as written (a user name, a flag), unless the operator fills it in; a file's
                    # content is the operator's too: those get a strong random test value.
                    operator_fills = flag == "--from-file=" or not literal or "$" in literal or "<" in literal
                    keys[key] = f"test-{name}-{key}-{_random.token_hex(16)}" if operator_fills else literal
    return created


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def workloads(resources: list[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload among `resources`."""
    for file, doc in resources:
        if doc.get("kind") in WORKLOAD_KINDS:
            yield f"{file}: {doc['kind']}/{doc['metadata']['name']}", _pod_spec(doc)


class Cluster:
    """The ConfigMaps of the resources and the documented Secrets, to resolve pods' references against."""

    def __init__(self, resources: list[tuple[str, dict[str, Any]]], secrets: dict[str, dict[str, str]]) -> None:
        self.config_maps = {
            doc["metadata"]["name"]: {k: str(v) for k, v in (doc.get("data") or {}).items()}
            for _, doc in resources
            if doc.get("kind") == "ConfigMap"
        }
        self.secrets = dict(secrets)
        for _, doc in resources:  # a Secret shipped as a resource (none today: they are created by hand)
            if doc.get("kind") == "Secret":
                data = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
                self.secrets[doc["metadata"]["name"]] = {k: str(v) for k, v in data.items()}

    def _source(self, kind: str, name: str, where: str, optional: bool = False) -> dict[str, str]:
        table = self.secrets if kind == "Secret" else self.config_maps
        if name not in table:
            if optional:
                return {}
            hint = " (create it as the deploy README says)" if kind == "Secret" else ""
            raise RenderError(f"{where}: {kind} {name!r} does not exist{hint}")
        return table[name]

    def _key(self, kind: str, ref: dict[str, Any], where: str) -> str | None:
        source = self._source(kind, ref["name"], where, ref.get("optional", False))
        if ref["key"] not in source:
            if ref.get("optional", False):
                return None
            raise RenderError(f"{where}: {kind} {ref['name']!r} has no key {ref['key']!r}")
        return source[ref["key"]]

    def container(self, where: str, pod: dict[str, Any], container: dict[str, Any]) -> Rendered:
        """The container's environment and mounted files, as the kubelet would set them up."""
        where = f"{where} container {container['name']}"
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    values = self._source(kind, ref["name"], where, ref.get("optional", False))
                    env.update({prefix + k: v for k, v in values.items()})
        for entry in container.get("env", []):
            value: str | None
            if "value" in entry:
                # $(VAR) refers to a variable defined before; $$( escapes it.
                value = re.sub(
                    r"\$\$\(|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                    lambda m: "$(" if m.group(1) is None else env.get(m.group(1), m.group(0)),
                    str(entry["value"]),
                )
            elif "valueFrom" in entry:
                source = entry["valueFrom"]
                if "configMapKeyRef" in source:
                    value = self._key("ConfigMap", source["configMapKeyRef"], where)
                elif "secretKeyRef" in source:
                    value = self._key("Secret", source["secretKeyRef"], where)
                elif "fieldRef" in source:
                    value = POD_NAME
                else:
                    value = "1"  # resourceFieldRef
            else:
                value = ""
            if value is not None:
                env[entry["name"]] = value
        command = list(container.get("args") or container.get("command") or [])
        return Rendered(where, container.get("image", ""), command, env, self._files(where, pod, container))

    def _files(self, where: str, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        files: dict[str, str] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise RenderError(f"{where}: volumeMount {mount['name']!r} names no volume of the pod")
            content = self._volume(where, volume)
            base = PurePosixPath(mount["mountPath"])
            sub_path = mount.get("subPath")
            for relative, text in content.items():
                if sub_path:
                    if relative == sub_path:
                        files[str(base)] = text
                else:
                    files[str(base / relative)] = text
        return files

    def _volume(self, where: str, volume: dict[str, Any]) -> dict[str, str]:
        """Relative path -> content of a secret, ConfigMap or projected volume (empty for the others)."""
        sources: list[tuple[str, dict[str, Any]]] = []
        if "secret" in volume:
            sources.append(("Secret", {**volume["secret"], "name": volume["secret"]["secretName"]}))
        if "configMap" in volume:
            sources.append(("ConfigMap", volume["configMap"]))
        for projected in (volume.get("projected") or {}).get("sources", []):
            if "secret" in projected:
                sources.append(("Secret", projected["secret"]))
            if "configMap" in projected:
                sources.append(("ConfigMap", projected["configMap"]))
        content: dict[str, str] = {}
        for kind, ref in sources:
            values = self._source(kind, ref["name"], where, ref.get("optional", False))
            items = ref.get("items")
            if items is None:
                content.update(values)
                continue
            for item in items:
                if item["key"] not in values:
                    raise RenderError(f"{where}: {kind} {ref['name']!r} has no key {item['key']!r} to mount")
                content[item["path"]] = values[item["key"]]
        return content


def kubernetes_containers(directory: Path, readme: Path) -> list[Rendered]:
    """Every container of every workload the kustomization in `directory` applies, rendered."""
    resources = kustomize_resources(directory)
    cluster = Cluster(resources, documented_secrets(readme))
    return [
        cluster.container(where, pod, container)
        for where, pod in workloads(resources)
        for container in [*pod.get("initContainers", []), *pod["containers"]]
    ]
