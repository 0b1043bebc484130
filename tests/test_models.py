from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from curate.score import models
from curate.cli import main
from curate.score.models import DownloadError, ModelError, download, install_illustration2vec, load_illustration2vec
from curate.testing.i2v import numpy_forward, numpy_preprocess, random_weights, write_caffemodel, write_onnx, write_tags

WIDTH = 16  # 1/16 of the published width: the same graph, quick enough for a NumPy reference


@pytest.fixture(scope="module")
def weights():
    return random_weights(WIDTH, seed=3)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (512, 256, 3), dtype=np.uint8) for _ in range(3)]


def _tf_probs(model, images):
    from curate.score.illust2vec import preprocess

    return model(preprocess(np.stack(images)), training=False).numpy()


@pytest.mark.parametrize("kind", ["caffe", "caffe-legacy", "onnx"])
def test_converted_weights_match_a_numpy_forward_pass(tmp_path, weights, images, kind):
    src = tmp_path / "src"
    src.mkdir()
    if kind == "onnx":
        write_onnx(src / "illust2vec_tag_ver200.onnx", weights)
    else:
        write_caffemodel(src / "illust2vec_tag_ver200.caffemodel", weights, legacy=kind == "caffe-legacy")
    write_tags(src / "tag_list.json.gz", gz=True)
    manifest = install_illustration2vec(src, tmp_path / "models", progress=False)
    assert manifest["width_divisor"] == WIDTH and manifest["source"]["kind"] == kind.split("-")[0]
    folder = tmp_path / "models" / "illustration2vec"
    assert manifest["weights_sha256"] == models.file_sha256(folder / manifest["weights"])

    model, tags, _ = load_illustration2vec(tmp_path / "models")
    assert len(tags) == 1539 and tags[-3:] == ["safe", "questionable", "explicit"]
    got = _tf_probs(model, images)
    want = np.stack([numpy_forward(weights, numpy_preprocess(img)) for img in images])
    assert got.shape == (3, 1539)
    assert 0.2 < want.std()  # the probabilities are spread, so a wrong layer would show
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_install_refuses_wrong_network_and_load_refuses_altered_weights(tmp_path, weights):
    src = tmp_path / "src"
    src.mkdir()
    bad = dict(weights)
    bad["conv3_2"] = (np.zeros((9, 16, 3, 3), np.float32), np.zeros(9, np.float32))
    write_caffemodel(src / "x.caffemodel", bad)
    with pytest.raises(ModelError, match="no tag_list.json"):
        install_illustration2vec(src, tmp_path / "m")
    write_tags(src / "tag_list.json")
    with pytest.raises(ModelError, match="conv3_2"):
        install_illustration2vec(src, tmp_path / "m")

    write_caffemodel(src / "x.caffemodel", weights)
    install_illustration2vec(src / "x.caffemodel", tmp_path / "m")
    w = tmp_path / "m" / "illustration2vec" / models.WEIGHTS_FILE
    w.write_bytes(w.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        load_illustration2vec(tmp_path / "m")


# ------------------------------------------------------------------------------------------ download

class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with HTTP Range support (what GitHub's release CDN does), logging each request."""

    honour_range = True
    log: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        type(self).log.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and self.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = type("H", (_RangeHandler,), {"log": [], "honour_range": True})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_a_part_file_with_range_and_verifies(tmp_path, server):
    root, url, handler = server
    payload = os.urandom(300_000)
    (root / "f.bin").write_bytes(payload)
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    (dest.parent / "f.bin.part").write_bytes(payload[:123_456])  # a killed earlier try
    download(f"{url}/f.bin", dest, sha256=digest, size=len(payload), progress=False)
    assert dest.read_bytes() == payload and not (dest.parent / "f.bin.part").exists()
    assert handler.log[-1] == ("/f.bin", "bytes=123456-")

    # A server that ignores Range sends everything again: the download starts over, still correct.
    handler.honour_range = False
    dest.unlink()
    (dest.parent / "f.bin.part").write_bytes(payload[:1000])
    download(f"{url}/f.bin", dest, sha256=digest, progress=False)
    assert dest.read_bytes() == payload

    # A wrong published hash: refused, and the bad file is not kept.
    dest.unlink()
    with pytest.raises(DownloadError, match="sha256"):
        download(f"{url}/f.bin", dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (dest.parent / "f.bin.part").exists()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{url}/missing.bin", dest, progress=False)


def test_a_dropped_connection_is_retried_and_resumes_with_range(tmp_path, server):
    root, url, handler = server
    payload = os.urandom(200_000)
    (root / "g.bin").write_bytes(payload)

    class Broken(handler):
        broken = [True]

        def do_GET(self):
            if self.broken.pop() if self.broken else False:  # the first answer stops half way
                type(self).log.append((self.path, self.headers.get("Range")))
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[:50_000])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

    server_cls = http.server.ThreadingHTTPServer
    httpd = server_cls(("127.0.0.1", 0), lambda *a: Broken(*a, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        from curate.core.http import Client

        waits = []
        dest = tmp_path / "g.bin"
        download(f"http://127.0.0.1:{httpd.server_address[1]}/g.bin", dest, size=len(payload), progress=False,
                 client=Client(rate=0, backoff=0.25, sleep=waits.append))
        assert dest.read_bytes() == payload and waits == [0.25]
        assert [r for _, r in Broken.log] == [None, "bytes=50000-"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_install_without_network_is_one_line_telling_to_use_from(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: the same error as no network
    with pytest.raises(SystemExit) as e:
        main(["models", "install", "illustration2vec", "--mirror", f"http://127.0.0.1:{port}",
              "--models-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "--from" in err and "cannot download" in err


def test_cli_installs_from_a_mirror_and_lists(tmp_path, server, weights, capsys):
    root, url, _ = server
    write_caffemodel(root / "illust2vec_tag_ver200.caffemodel", weights)
    write_tags(root / "tag_list.json.gz", gz=True)
    (root / "illust2vec_tag.prototxt").write_text('name: "illust2vec_tag"\n')
    with pytest.raises(SystemExit) as e:
        main(["models", "install", "illustration2vec", "--mirror", url, "--models-dir", str(tmp_path / "m"),
              "--no-progress"])
    assert e.value.code == 0
    assert "installed illustration2vec from caffe" in capsys.readouterr().out
    assert (tmp_path / "m" / "downloads" / "caffe" / "illust2vec_tag_ver200.caffemodel").is_file()
    with pytest.raises(SystemExit):
        main(["models", "list", "--models-dir", str(tmp_path / "m")])
    manifest = json.loads((tmp_path / "m" / "illustration2vec" / "manifest.json").read_text())
    assert manifest["weights_sha256"] in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ real weights

def test_miku_regression_with_the_real_weights():
    """rezoo/illustration2vec README: hatsune miku 0.99999, 1girl 0.98735, safe 0.97857 on images/miku.jpg."""
    root = models.models_dir()
    manifest = models.installed(root)
    if manifest is None or manifest.get("width_divisor") != 1:
        pytest.skip(f"real illustration2vec weights are not installed in {root} (curate models install illustration2vec)")
    miku = Path(os.environ.get("CURATE_MIKU", root / "illustration2vec" / "miku.jpg"))
    if not miku.is_file():
        pytest.skip(f"no {miku}: put images/miku.jpg from rezoo/illustration2vec there or set CURATE_MIKU")
    from PIL import Image

    model, tags, _ = load_illustration2vec(root)
    probs = _tf_probs(model, [np.asarray(Image.open(miku).convert("RGB"))])[0]
    index = {t: i for i, t in enumerate(tags)}
    for tag, want in [("hatsune miku", 0.99999), ("1girl", 0.98735), ("safe", 0.97857)]:
        assert abs(probs[index[tag]] - want) < 5e-3, tag
