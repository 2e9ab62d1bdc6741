"""Registry of the official weight files, their cache, and a resumable, hash-checked downloader.

Why this exists: the weights cannot be bundled (S-Lab and CC BY-NC-SA terms), so they are fetched at run time,
verified against known hashes and kept in a per-user cache. Everything works offline too: an explicit path always
wins, and a missing file produces one message saying exactly where to put it.

Environment:
- ``VS_KEEP_HOME``: the cache root (`vs_keep.cache`) instead of the platform's user cache folder; weights go to
  its ``weights/`` subfolder.
- ``VS_KEEP_WEIGHTS_MIRROR``: one or more base URLs (separated by spaces or commas) tried, in order, before the
  official URLs; the file name is appended to each base (``https://mirror.example/weights`` ->
  ``https://mirror.example/weights/KEEP-a1a14d46.pth``). ``file://`` bases work too. Useful behind proxies, on
  air-gapped networks with an internal mirror, and in tests.
- ``VS_KEEP_DOWNLOAD_TIMEOUT``: socket timeout in seconds (default 30).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .atomic import atomic_write, file_lock, replace_file
from .cache import ENV_HOME, folder
from .errors import CheckpointError, InputError, WeightsNotFoundError

__all__ = [
    "DEFAULT_TIMEOUT", "ENV_MIRROR", "ENV_TIMEOUT", "RESTORERS", "WEIGHTS", "WeightSpec", "cache_dir", "candidate_urls",
    "download", "get", "license_notice", "names", "resolve", "sha256_file", "verify",
]

log = logging.getLogger(__name__)

ENV_MIRROR = "VS_KEEP_WEIGHTS_MIRROR"
ENV_TIMEOUT = "VS_KEEP_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 20
_ATTEMPTS_PER_URL = 3  # a connection that dropped after making progress is resumed this many times
_USER_AGENT = "vs-keep-weights/1"

@dataclass(frozen=True, kw_only=True)
class WeightSpec:
    """One weight file: where it comes from, how to check it and under which terms it may be used.

    `sha256` is the full hex digest when it is known, else the leading hex digits that the publisher put in the
    file name (OpenMMLab / BasicSR convention), else None. `manual_download` is set for files that have no direct
    URL (e.g. Google Drive folders) and says how to get them. `license` names a notice in `vs_keep/licenses/`;
    `license_url` is only needed where that notice has no fixed URL (S-Lab: each project's own LICENSE file).
    """

    name: str
    filename: str
    license: str
    source: str  # copyright holder / project, shown in the license notice
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    description: str = ""
    manual_download: str | None = None
    license_url: str = ""

    def __post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{1,64}", self.sha256):
            raise InputError(f"WeightSpec {self.name!r}: sha256 must be lowercase hex, got {self.sha256!r}")
        if not self.urls and not self.manual_download:
            raise InputError(f"WeightSpec {self.name!r}: needs urls or a manual_download note")

    def hash_matches(self, digest: str) -> bool:
        """True when `digest` (full sha256 hex) agrees with what is known of this file's hash (all or a prefix)."""
        return self.sha256 is None or digest.startswith(self.sha256)

    @property
    def expected_hash(self) -> str:
        if self.sha256 is None:
            return "(not known)"
        return self.sha256 if len(self.sha256) == 64 else f"{self.sha256}..."


_KEEP_REL = "https://github.com/jnjaby/KEEP/releases/download/v0.1.0/"
_KEEP_V1 = "https://github.com/jnjaby/KEEP/releases/download/v1.0.0/"
_CF_REL = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"
_MMAGIC_DIC = "https://download.openmmlab.com/mmediting/restorers/dic/"
_DIC_DRIVE = "https://drive.google.com/open?id=1Q1T1smMDRMO1NcjkxbZvotOX93YIVp5e"


def _hash_in_name(filename: str) -> str:
    """The sha256 prefix a publisher put in a file name (`KEEP-a1a14d46.pth` -> `a1a14d46`)."""
    return filename.rsplit("-", 1)[1].removesuffix(".pth")


def _keep(name: str, filename: str, release: str, description: str) -> WeightSpec:
    """A KEEP release file: S-Lab terms, hash prefix in the file name."""
    return WeightSpec(
        name=name, filename=filename, urls=(release + filename,), sha256=_hash_in_name(filename), license="S-Lab-1.0",
        source="Copyright 2024 S-Lab, KEEP (github.com/jnjaby/KEEP)",
        license_url="https://github.com/jnjaby/KEEP/blob/main/LICENSE", description=description,
    )


def _retinaface(name: str, filename: str, sha256: str, size: int, description: str) -> WeightSpec:
    """A facexlib RetinaFace detector, from KEEP's release first, then facexlib's."""
    return WeightSpec(
        name=name, filename=filename, urls=(_KEEP_REL + filename, _FACEXLIB + "v0.1.0/" + filename), sha256=sha256,
        size=size, license="MIT", source="RetinaFace (github.com/biubug6/Pytorch_Retinaface, via facexlib)",
        description=description,
    )


def _mmagic_dic(model: str, filename: str) -> WeightSpec:
    """An OpenMMLab port of DIC / DICGAN (x8, CelebA-HQ)."""
    return WeightSpec(
        name=f"{model.lower()}_celeba_x8", filename=filename, urls=(_MMAGIC_DIC + filename,),
        sha256=_hash_in_name(filename), license="Apache-2.0", source="OpenMMLab mmagic (github.com/open-mmlab/mmagic)",
        description=f"{model} x8 tiny-face SR, CelebA-HQ (mmagic port, keys under 'generator.')",
    )


def _dic_official(model: str, dataset: str) -> WeightSpec:
    """An original DIC / DICGAN x8 release: only on Google Drive (or Baidu), so a manual download."""
    return WeightSpec(
        name=f"{model.lower()}_{dataset.lower()}_x8_official", filename=f"{model}_{dataset}.pth", license="MIT",
        source="Ma et al., DIC (github.com/Maclory/Deep-Iterative-Collaboration)",
        description=f"{model} x8, {dataset} (original release, manual download)",
        manual_download=(
            f"official {model} ({dataset}, x8) checkpoint from the authors' Google Drive 'models' folder "
            f"({_DIC_DRIVE}; Baidu mirror, code 6qhx, linked from github.com/Maclory/Deep-Iterative-Collaboration). "
            "Google Drive needs a browser: download it by hand"
        ),
    )


# One explicit, ordered list. Hashes and sizes: KEEP-REFERENCE.md §5 (third-party records, checked on download);
# prefixes come from the publishers' file names (first hex digits of the sha256).
WEIGHTS: tuple[WeightSpec, ...] = (
    _keep("keep", "KEEP-a1a14d46.pth", _KEEP_REL,
          "KEEP video face restoration, release v0.1.0 (includes its GMFlow weights)"),
    WeightSpec(
        name="codeformer",
        filename="codeformer.pth",
        urls=(_CF_REL + "codeformer.pth",),
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        size=376_637_898,
        license="S-Lab-1.0",
        source="Copyright 2022 S-Lab, CodeFormer (github.com/sczhou/CodeFormer)",
        license_url="https://github.com/sczhou/CodeFormer/blob/master/LICENSE",
        description="CodeFormer single-image face restoration",
    ),
    _retinaface("retinaface_resnet50", "detection_Resnet50_Final.pth",
                "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", 109_497_761,
                "RetinaFace ResNet-50 face detector (default)"),
    _retinaface("retinaface_mobilenet0.25", "detection_mobilenet0.25_Final.pth",
                "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220", 1_789_735,
                "RetinaFace MobileNet-0.25 face detector (fast)"),
    WeightSpec(
        name="parsenet",
        filename="parsing_parsenet.pth",
        urls=(_CF_REL + "parsing_parsenet.pth", _FACEXLIB + "v0.2.2/parsing_parsenet.pth"),
        sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        size=85_331_193,
        license="CC-BY-NC-SA-4.0",
        source="PSFRGAN authors (github.com/chaofengc/PSFRGAN)",
        description="ParseNet face parsing (paste-back mask)",
    ),
    _mmagic_dic("DIC", "dic_x8c48b6_g4_150k_CelebAHQ_20210611-5d3439ca.pth"),
    _mmagic_dic("DICGAN", "dic_gan_x8c48b6_g4_500k_CelebAHQ_20210625-3b89a358.pth"),
    _dic_official("DIC", "CelebA"),
    _dic_official("DICGAN", "CelebA"),
    _dic_official("DIC", "Helen"),
    _dic_official("DICGAN", "Helen"),
    # KEEP v1.0.0 (listed after the older entries): the layout is read from the tensors at load; no real v1.0.0
    # file has been loaded by this project yet (README)
    _keep("keep-v1", "KEEP-b76feb75.pth", _KEEP_V1, "KEEP video face restoration, release v1.0.0 (trained on VFHQ)"),
    _keep("keep-asian", "KEEP_Asian-4765ebe0.pth", _KEEP_V1, "KEEP release v1.0.0 fine-tuned on VFHQ plus Asian faces"),
)


#: names `model=` / `--model` accept -> the network family their weights hold (each is also a WEIGHTS entry)
RESTORERS = {"keep": "keep", "keep-v1": "keep", "keep-asian": "keep", "codeformer": "codeformer"}


def names() -> list[str]:
    return [spec.name for spec in WEIGHTS]


def get(name: str) -> WeightSpec:
    """The registry entry called `name` (or whose file name is `name`)."""
    for spec in WEIGHTS:
        if name in (spec.name, spec.filename):
            return spec
    raise InputError(f"unknown weights name {name!r}; known names: {', '.join(names())}")


def cache_dir() -> Path:
    """Folder holding downloaded weights: `weights/` under the cache root (`vs_keep.cache`; not created here)."""
    return folder("weights")


def _timeout() -> float:
    raw = os.environ.get(ENV_TIMEOUT)
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise InputError(f"{ENV_TIMEOUT} must be > 0, got {raw!r}")
    return value


def candidate_urls(spec: WeightSpec) -> list[str]:
    """Mirrors from `VS_KEEP_WEIGHTS_MIRROR` first (file name appended), then the official URLs."""
    bases = [b for b in re.split(r"[\s,]+", os.environ.get(ENV_MIRROR, "")) if b]
    return [b.rstrip("/") + "/" + spec.filename for b in bases] + list(spec.urls)


# ---------------------------------------------------------------------------------------------------------------
# Verification and the `.sha256` sidecar
# ---------------------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    """`sha256sum` format, written after the file, so a newer file than its sidecar means "check again"."""
    try:
        atomic_write(_sidecar(path), f"{digest}  {path.name}\n".encode("ascii"))
    except OSError as exc:  # a read-only cache still works, it is just checked every time
        log.debug("could not write %s: %s", _sidecar(path), exc)


def _sidecar_digest(path: Path) -> str | None:
    side = _sidecar(path)
    try:
        if side.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return None
        digest = side.read_text(encoding="ascii").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def verify(spec: WeightSpec, path: Path) -> None:
    """Check `path` against the spec's hash, once: a matching sidecar makes later calls instant.

    Raises CheckpointError on mismatch; never deletes the file (it may be the user's own copy).
    """
    if spec.sha256 is None:
        return
    if spec.size is not None and path.stat().st_size != spec.size:
        raise CheckpointError(
            f"{path} has {path.stat().st_size} bytes but {spec.name} ({spec.filename}) has {spec.size}: the file is "
            f"incomplete or a different file; delete it to download again, or pass it as an explicit path"
        )
    recorded = _sidecar_digest(path)
    if recorded is None:
        log.info("checking sha256 of %s", path)
    digest = recorded or sha256_file(path)
    if not spec.hash_matches(digest):
        raise CheckpointError(
            f"{path} has sha256 {digest}, expected {spec.expected_hash} for {spec.name}: the file is corrupt or a "
            f"different file; delete it to download again, or pass it as an explicit path to use it unchecked"
        )
    if recorded is None:
        _write_sidecar(path, digest)


# ---------------------------------------------------------------------------------------------------------------
# License notices
# ---------------------------------------------------------------------------------------------------------------


def license_notice(spec: WeightSpec) -> str:
    """The short notice (our own summary, with the license URL) shown before a first download."""
    template = resources.files("vs_keep").joinpath("licenses", f"{spec.license}.txt").read_text("utf-8")
    return template.format(filename=spec.filename, copyright=spec.source, url=spec.license_url)


def _show_license_once(spec: WeightSpec) -> None:
    """Show the notice on stderr the first time this file is downloaded; a marker in the cache remembers it."""
    marker = cache_dir() / f".license-shown-{spec.name}"
    if marker.exists():
        return
    # stderr, not logging: the terms must be visible even when the host application silences our logger.
    sys.stderr.write(license_notice(spec).rstrip("\n") + "\n")
    sys.stderr.flush()
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{spec.license}\n", encoding="ascii")
    except OSError as exc:
        log.debug("could not write license marker %s: %s", marker, exc)


# ---------------------------------------------------------------------------------------------------------------
# HTTP transfer
# ---------------------------------------------------------------------------------------------------------------


class _Incomplete(OSError):
    """The connection ended before the announced number of bytes arrived (urllib does not raise for this)."""


_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)


def _fetch(url: str, part: Path, spec: WeightSpec, *, timeout: float, progress: bool) -> str:
    """Fetch `url` into `part`, resuming from its current length; returns the sha256 of the whole file."""
    offset = part.stat().st_size if part.exists() else 0
    if spec.size is not None and offset > spec.size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after `offset`: the partial file may already be complete
            exc.close()
            return sha256_file(part)
        raise
    with resp:
        length_header = resp.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if offset and resp.status == 206:
            content_range = resp.headers.get("Content-Range")
            m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", content_range or "")
            if m is None or int(m.group(1)) != offset:
                raise _Incomplete(f"server answered Range bytes={offset}- with Content-Range {content_range!r}")
            with open(part, "rb") as f:
                hasher = hashlib.file_digest(f, "sha256")  # continued with the bytes that follow
            mode = "ab"
            log.info("resuming %s at byte %d", spec.filename, offset)
        else:
            if offset:
                log.info("%s ignored the Range request; downloading %s from the start", url, spec.filename)
            offset, mode, hasher = 0, "wb", hashlib.sha256()
        from tqdm import tqdm

        # read1 returns whatever has arrived, so bytes received before a stall are kept for the resume.
        read = getattr(resp, "read1", resp.read)
        received = 0
        with open(part, mode) as f, tqdm(
            total=None if length is None else offset + length, initial=offset, unit="B", unit_scale=True,
            unit_divisor=1024, desc=spec.filename,
            file=sys.stderr, disable=not progress, leave=True, dynamic_ncols=True,
        ) as bar:
            while chunk := read(_CHUNK):
                f.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if length is not None and received < length:
            raise _Incomplete(f"connection closed after {received} of {length} bytes")
    return hasher.hexdigest()


def _manual_message(spec: WeightSpec, dest: Path, failures: list[str]) -> str:
    if failures:
        lines = [f"could not download weights {spec.name!r} ({spec.filename}); tried:"]
    else:
        lines = [f"weights {spec.name!r} ({spec.filename}) are not in the cache."]
    lines += [f"  {f}" for f in failures]
    if spec.manual_download:
        lines.append(f"It is a manual download: {spec.manual_download}.")
    else:
        lines.append(f"Download it on a machine with network access from {spec.urls[0]}")
    lines.append(f"Put the file here: {dest}")
    lines.append(
        "or pass its path explicitly (--weights FILE, or any explicit path in the API), "
        f"or set {ENV_MIRROR} to a mirror base URL, or {ENV_HOME} to another cache root (weights go to its weights/ subfolder)."
    )
    return "\n".join(lines)


def _fetch_with_retries(url: str, part: Path, spec: WeightSpec, timeout: float, progress: bool,
                       failures: list[str]) -> str | None:
    """One URL: resume after dropped connections that made progress; a failure is appended to `failures`."""
    for attempt in range(_ATTEMPTS_PER_URL):
        before = part.stat().st_size if part.exists() else 0
        log.info("downloading %s from %s", spec.filename, url)
        try:
            return _fetch(url, part, spec, timeout=timeout, progress=progress)
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            return None
        except _NETWORK_ERRORS as exc:
            reason = getattr(exc, "reason", None) or exc
            after = part.stat().st_size if part.exists() else 0
            if after > before and attempt + 1 < _ATTEMPTS_PER_URL:
                log.warning("%s: %s; resuming", url, reason)
                continue
            failures.append(f"{url}: {type(exc).__name__}: {reason}")
            return None
    return None


def download(spec: WeightSpec, dest_dir: Path | str | None = None, progress: bool = True) -> Path:
    """Download `spec` into `dest_dir` (default: the cache), trying mirrors in order; returns the verified path.

    A `.part` file is resumed with an HTTP Range request (restarted if the server ignores it), the sha256 is
    checked before the atomic rename, and a bad file is deleted. A file already present and verified is kept.
    """
    dest = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    target = dest / spec.filename
    urls = candidate_urls(spec)
    if not urls:
        raise WeightsNotFoundError(_manual_message(spec, target, []))
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsNotFoundError(f"cannot create the weights folder {dest}: {exc}; set {ENV_HOME} or "
                                   f"--dir to a writable folder") from None
    part = target.with_name(target.name + ".part")
    with file_lock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process may have finished it while we waited for the lock
            verify(spec, target)
            return target
        _show_license_once(spec)
        timeout = _timeout()
        failures: list[str] = []
        mismatches: list[str] = []
        for url in urls:
            for retry_fresh in (False, True):
                resumed = part.exists() and part.stat().st_size > 0
                digest = _fetch_with_retries(url, part, spec, timeout, progress, failures)
                if digest is None:
                    break
                size = part.stat().st_size
                if (spec.size is None or size == spec.size) and spec.hash_matches(digest):
                    replace_file(part, target)
                    if spec.sha256 is not None:
                        _write_sidecar(target, digest)
                    log.info("saved %s (sha256 %s)", target, digest)
                    return target
                part.unlink()
                if resumed and not retry_fresh:  # a stale .part (other version?) spoiled it: start over once
                    log.warning("resumed %s does not match its hash; downloading it again from the start", url)
                    continue
                mismatches.append(f"{url}: got sha256 {digest} ({size} bytes), expected {spec.expected_hash}"
                                  + (f" ({spec.size} bytes)" if spec.size is not None else ""))
                break
        if mismatches:
            raise CheckpointError(
                f"downloaded {spec.filename} does not match the expected hash; the bad file was deleted.\n  "
                + "\n  ".join(mismatches + failures)
            )
        raise WeightsNotFoundError(_manual_message(spec, target, failures))


_download = download  # `resolve` has a parameter named `download`


def resolve(name_or_path: str | os.PathLike[str] | WeightSpec, *, download: bool = True,
            progress: bool = True) -> Path:
    """Path of a weights file: an existing explicit path as is, else the verified cached copy, else a download.

    `name_or_path` is a registry name (`keep`), a registry file name (`KEEP-a1a14d46.pth`), a WeightSpec, or a
    path. Explicit paths are not hash-checked: they are the user's choice.
    """
    if isinstance(name_or_path, WeightSpec):
        spec = name_or_path
    else:
        path = Path(name_or_path).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            raise InputError(f"weights path {path} is a folder, not a file")
        try:
            spec = get(str(name_or_path))
        except InputError:
            if isinstance(name_or_path, os.PathLike) or os.sep in str(name_or_path) or path.suffix:
                raise WeightsNotFoundError(
                    f"weights file {path} does not exist; check the path, or pass a model name "
                    f"({', '.join(names()[:3])}, ...) to use the cached official file (`vs-keep download NAME`)"
                ) from None
            raise
    cached = cache_dir() / spec.filename
    if cached.is_file():
        verify(spec, cached)
        return cached
    if not download:
        raise WeightsNotFoundError(_manual_message(spec, cached, ["downloads are disabled"]))
    return _download(spec, progress=progress)
