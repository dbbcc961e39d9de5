"""A search page over a teacher index: upload or pick a query image, see the top results.

:class:`SearchPage` does the work — reads an upload safely (size, format and pixel limits
checked before decoding), runs the query model (a student, its ONNX export, or the teacher)
and searches the index; :func:`create_app` wraps it in a Flask app; :func:`make_server`
serves that app with waitress on 127.0.0.1; :func:`serve` runs one until interrupted.

The page needs no JavaScript: a form posts the query, the server answers with the query, the
ranked picture grid, each result's score and the milliseconds the query model took. The same
search answers JSON at ``POST /api/search``. Routes:

- ``GET /``: the form, and the example queries to pick from;
- ``POST /search`` (form fields ``query`` (a file) or ``example`` (a number), ``box``, ``k``):
  the result page;
- ``POST /api/search``: the same fields, a JSON answer;
- ``GET /images/<row>``, ``GET /examples/<number>``: JPEG thumbnails of an index image and of
  an example query (its box drawn).
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

from asymret.errors import AsymretError
from asymret.index import (
    Hit,
    TeacherIndex,
    as_query_model,
    check_query_model,
    load_queries,
    model_vectors,
    parse_box,
)

THUMBNAIL_SIDE = 256
"""Longer side of the thumbnails the page shows, in pixels."""

UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
"""Image formats an upload may have (PIL's names)."""


@dataclass(frozen=True)
class UploadLimits:
    """What an uploaded query may be.

    Attributes:
        max_bytes: the largest file accepted.
        max_pixels: the largest width × height accepted, checked from the header before
            anything is decoded (a decompression bomb is refused unread).
    """

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000

    def __post_init__(self):
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise AsymretError(f"upload limits must be positive, got {self}")


@dataclass(frozen=True)
class Example:
    """A query the page offers to pick: an image file and its optional box in pixels."""

    name: str
    path: Path
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class QueryResult:
    """One answered query.

    Attributes:
        hits: the ranked results, best first.
        thumbnail: the query as the model saw it (cropped), a JPEG.
        size: ``(width, height)`` of the query the model saw.
        model_ms: milliseconds the query model took for the vector.
        search_ms: milliseconds the index search took.
    """

    hits: list[Hit]
    thumbnail: bytes
    size: tuple[int, int]
    model_ms: float
    search_ms: float

    def as_json(self) -> dict:
        return {
            "results": [{"rank": rank, "path": hit.path, "score": hit.score,
                         "image": f"/images/{hit.row}"}
                        for rank, hit in enumerate(self.hits, start=1)],
            "size": list(self.size), "model_ms": self.model_ms, "search_ms": self.search_ms,
        }


class UploadError(AsymretError):
    """An upload the page refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class SearchPage:
    """Queries a teacher index through a query model, one at a time.

    Args:
        index: the opened teacher index.
        model: the query model (see :func:`asymret.index.search_index`); checked against the
            index's teacher once, here.
        imsize: the queries' longer side (default: the index's).
        k: results shown per query (a request may ask for up to ``max_k``).
        examples: queries offered to pick.
        limits: what an upload may be.
        allow_unknown_teacher: accept a model with no teacher record.
        nprobe, rerank: IVF-PQ search settings (default: the index's).
    """

    max_k = 100

    def __init__(self, index: TeacherIndex, model: Any, *, imsize: int | None = None,
                 k: int = 10, examples: Sequence[Example] = (),
                 limits: UploadLimits = UploadLimits(), allow_unknown_teacher: bool = False,
                 nprobe: int | None = None, rerank: int | None = None):
        self.index = index
        self.model = as_query_model(model)
        check_query_model(index, self.model, allow_unknown_teacher=allow_unknown_teacher)
        self.imsize = index.imsize if imsize is None else imsize
        self.k = self.check_k(k)
        self.examples = list(examples)
        self.limits = limits
        self.nprobe, self.rerank = nprobe, rerank
        self.model_name = str(self.model.metadata.get("source") or type(self.model).__name__)
        self._lock = threading.Lock()

    def check_k(self, k: Any) -> int:
        """``k`` as an int in 1..max_k, or an :class:`UploadError`."""
        try:
            value = int(k)
        except (TypeError, ValueError):
            raise UploadError(f"k must be a whole number, got {k!r}") from None
        if not 1 <= value <= self.max_k:
            raise UploadError(f"k must be between 1 and {self.max_k}, got {value}")
        return value

    def search_upload(self, data: bytes, filename: str = "upload", *,
                      box: tuple[float, float, float, float] | None = None,
                      k: int | None = None) -> QueryResult:
        """Search with an uploaded file's bytes.

        Raises:
            UploadError: empty, too large, not an image, too many pixels, or undecodable.
        """
        image_format = self.check_upload(data, filename)
        try:
            handle, temporary = tempfile.mkstemp(suffix=f".{image_format.lower()}")
        except OSError as exc:
            raise UploadError(f"{filename}: the server cannot store it ({exc.strerror})",
                              507) from None
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            return self._search(Path(temporary), box, k, filename)
        except OSError as exc:
            raise UploadError(f"{filename}: the server cannot store it ({exc.strerror})",
                              507) from None
        finally:
            os.unlink(temporary)

    def search_example(self, number: int, *, k: int | None = None) -> QueryResult:
        """Search with example ``number`` (its box applied)."""
        example = self.example(number)
        return self._search(example.path, example.box, k, example.name)

    def example(self, number: Any) -> Example:
        try:
            return self.examples[int(number)]
        except (TypeError, ValueError, IndexError):
            raise UploadError(f"no example query {number!r} (there are "
                              f"{len(self.examples)})", status=404) from None

    def check_upload(self, data: bytes, filename: str) -> str:
        """The upload's image format, after its size, format and pixel count are checked
        (nothing is decoded)."""
        if not data:
            raise UploadError(f"{filename}: the file is empty")
        if len(data) > self.limits.max_bytes:
            raise UploadError(f"{filename}: {_megabytes(len(data))} is more than the "
                              f"{_megabytes(self.limits.max_bytes)} an upload may be", 413)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    image_format, (width, height) = image.format, image.size
        except Image.DecompressionBombError as exc:
            raise UploadError(f"{filename}: {str(exc).rstrip('.')}; an upload may have at most "
                              f"{self.limits.max_pixels:,} pixels", 413) from None
        except (UnidentifiedImageError, OSError, ValueError):
            image_format, width, height = None, 0, 0
        if image_format is None:
            raise UploadError(f"{filename}: not an image ({', '.join(UPLOAD_FORMATS)} are "
                              "accepted)")
        if image_format not in UPLOAD_FORMATS:
            raise UploadError(f"{filename}: {image_format} images are not accepted "
                              f"({', '.join(UPLOAD_FORMATS)} are)")
        if width * height > self.limits.max_pixels:
            raise UploadError(f"{filename}: {width}×{height} is {width * height:,} pixels, "
                              f"more than the {self.limits.max_pixels:,} an upload may have",
                              413)
        return image_format

    def _search(self, path: Path, box, k: int | None, name: str) -> QueryResult:
        k = self.k if k is None else self.check_k(k)
        try:
            (image,) = load_queries([path], imsize=self.imsize, box=box)
        except AsymretError as exc:
            raise UploadError(str(exc).replace(str(path), name)) from None
        with self._lock:
            start = time.perf_counter()
            vectors = model_vectors(self.model, [image])
            searched = time.perf_counter()
            (hits,) = self.index.hits(vectors, k, nprobe=self.nprobe, rerank=self.rerank)
            done = time.perf_counter()
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        return QueryResult(hits, _jpeg(Image.fromarray(pixels)), (image.shape[2], image.shape[1]),
                           1000 * (searched - start), 1000 * (done - searched))

    def thumbnail(self, row: int) -> bytes:
        """A JPEG thumbnail of the index's image ``row``.

        Raises:
            UploadError: no such row (404) or the image cannot be read (410).
        """
        if not 0 <= row < self.index.count:
            raise UploadError(f"no image {row} in the index", status=404)
        return _thumbnail(Path(self.index.paths[row]))

    def example_thumbnail(self, number: int) -> bytes:
        """A JPEG thumbnail of example ``number``, its box drawn."""
        example = self.example(number)
        return _thumbnail(example.path, example.box)


def _thumbnail(path: Path, box=None) -> bytes:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UploadError(f"{path.name}: cannot be read ({exc})", status=410) from None
    if box is not None:
        ImageDraw.Draw(image).rectangle(box, outline=(255, 40, 40), width=max(
            2, round(max(image.size) / 150)))
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return _jpeg(image)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def example_queries(images: str | Path | None = None, dataset: str | Path | None = None,
                    root: str | Path | None = None, limit: int = 24) -> list[Example]:
    """Queries to offer: image files of a folder, or a test set's queries with their boxes.

    Args:
        images: a folder of images (searched recursively).
        dataset: a test set under the data root or a photo folder with ``images.csv``.
        root: the data root.
        limit: at most this many (the first ones).
    """
    if (images is None) == (dataset is None):
        raise AsymretError("give either a folder of example images or a dataset")
    if images is not None:
        from asymret.index import list_images

        return [Example(path.name, path) for path in list_images(images)[:limit]]
    from asymret.data import load_test_set

    test_set = load_test_set(dataset, root)
    examples = []
    for number, name in enumerate(test_set.qimlist[:limit]):
        box = test_set.gnd[number].get("bbx") if test_set.gnd else None
        examples.append(Example(name, test_set.image_path(name).resolve(),
                                None if box is None else tuple(float(v) for v in box)))
    return examples


# --- The web application -------------------------------------------------------------------


def create_app(page: SearchPage):
    """The Flask application of a :class:`SearchPage`."""
    from flask import Flask, Response, jsonify, render_template_string, request
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    app = Flask("asymret.serve")
    # Werkzeug refuses a body this large before reading it; the exact limit is checked after.
    app.config["MAX_CONTENT_LENGTH"] = page.limits.max_bytes + 2**20

    def render(result: QueryResult | None = None, query_name: str = "", error: str = "",
               status: int = 200):
        html = render_template_string(
            PAGE_TEMPLATE, page=page, result=result, query_name=query_name, error=error,
            query_src=None if result is None else
            "data:image/jpeg;base64," + base64.b64encode(result.thumbnail).decode(),
            index_name=page.index.path.name)
        return html, status

    def run_query() -> tuple[QueryResult, str]:
        form = request.form
        box = parse_box(form["box"]) if form.get("box", "").strip() else None
        k = form.get("k") or None
        upload = request.files.get("query")
        if upload is not None and upload.filename:
            return page.search_upload(upload.read(), upload.filename, box=box, k=k), \
                upload.filename
        if form.get("example", "") != "":
            example = page.example(form["example"])
            return page.search_example(int(form["example"]), k=k), example.name
        raise UploadError("choose an image to upload or pick an example")

    @app.get("/")
    def home():
        return render()

    @app.post("/search")
    def search():
        try:
            result, name = run_query()
        except UploadError as exc:
            return render(error=str(exc), status=exc.status)
        except AsymretError as exc:
            return render(error=str(exc), status=400)
        return render(result, name)

    @app.post("/api/search")
    def api_search():
        try:
            result, name = run_query()
        except UploadError as exc:
            return jsonify(error=str(exc)), exc.status
        except AsymretError as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(query=name, **result.as_json())

    def jpeg(make) -> Any:
        try:
            return Response(make(), mimetype="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})
        except UploadError as exc:
            return Response(str(exc), status=exc.status, mimetype="text/plain")

    @app.get("/images/<int:row>")
    def image(row: int):
        return jpeg(lambda: page.thumbnail(row))

    @app.get("/examples/<int:number>")
    def example(number: int):
        return jpeg(lambda: page.example_thumbnail(number))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error):
        message = (f"the upload is more than the {_megabytes(page.limits.max_bytes)} an "
                   "upload may be")
        if request.path.startswith("/api/"):
            return jsonify(error=message), 413
        return render(error=message, status=413)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return Response(f"{error.code} {error.name}: {error.description}", status=error.code,
                        mimetype="text/plain")

    return app


def make_server(app, port: int = 8000, *, host: str = "127.0.0.1", threads: int = 4):
    """A waitress server of ``app`` (``port`` 0: a free port, see ``.effective_port``); call
    ``.run()`` to serve and ``.close()`` to stop."""
    from waitress import create_server

    # Bodies up to 4× Flask's limit reach the app, which answers them with its own message;
    # waitress refuses larger ones unread.
    return create_server(app, host=host, port=port, threads=threads,
                         max_request_body_size=4 * app.config["MAX_CONTENT_LENGTH"])


def serve(page: SearchPage, port: int = 8000, *, host: str = "127.0.0.1") -> None:
    """Serve the page until interrupted (Ctrl-C)."""
    server = make_server(create_app(page), port, host=host)
    print(f"asymret: searching {page.index.path} ({page.index.count} images) with "
          f"{page.model_name} at http://{host}:{server.effective_port}/ (Ctrl-C stops)",
          flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>asymret search · {{ index_name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
.muted { color: #666; font-size: .9rem; }
form.query { display: flex; flex-wrap: wrap; gap: .8rem; align-items: end; margin: 1rem 0;
             padding: 1rem; background: #f4f5f7; border-radius: .5rem; }
form.query label { display: flex; flex-direction: column; font-size: .85rem; gap: .2rem; }
.error { background: #fde8e8; color: #8a1111; padding: .7rem 1rem; border-radius: .4rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr));
        gap: .8rem; margin: 0; padding: 0; }
.grid figure { margin: 0; background: #fafafa; border: 1px solid #e2e2e2;
               border-radius: .4rem; overflow: hidden; }
.grid img { width: 100%; height: 9rem; object-fit: cover; display: block; background: #ddd; }
.grid figcaption { font-size: .8rem; padding: .3rem .5rem; overflow-wrap: anywhere; }
.examples button { border: 2px solid transparent; padding: 0; background: none;
                   cursor: pointer; }
.examples button:hover { border-color: #3b6fd8; }
.examples img { height: 5rem; display: block; }
.examples { display: flex; flex-wrap: wrap; gap: .4rem; }
#query-panel { display: flex; gap: 1rem; align-items: center; margin: 1rem 0; }
#query-panel img { height: 8rem; width: auto; border: 2px solid #3b6fd8; }
</style>
</head>
<body>
<h1>asymret search</h1>
<div class="muted">index <b>{{ index_name }}</b>: {{ page.index.count }} images, teacher
{{ page.index.teacher.name }} · query model <b>{{ page.model_name }}</b>
{% if page.imsize %}at {{ page.imsize }} px{% endif %}</div>

<form class="query" id="upload-form" action="/search" method="post"
      enctype="multipart/form-data">
  <label>query image <input type="file" name="query" id="query-file" accept="image/*"></label>
  <label>box x1,y1,x2,y2 (optional)
    <input type="text" name="box" id="query-box" size="16" placeholder="all of it"></label>
  <label>results <input type="number" name="k" id="query-k" min="1" max="{{ page.max_k }}"
    value="{{ page.k }}" style="width: 4rem"></label>
  <button type="submit" id="search-button">Search</button>
</form>

{% if page.examples %}
<form class="examples" id="examples" action="/search" method="post">
  <span class="muted">or pick one:</span>
  {% for example in page.examples %}
  <button type="submit" name="example" value="{{ loop.index0 }}" title="{{ example.name }}">
    <img src="/examples/{{ loop.index0 }}" alt="{{ example.name }}"></button>
  {% endfor %}
</form>
{% endif %}

{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}

{% if result %}
<div id="query-panel">
  <img id="query-image" src="{{ query_src }}" alt="query">
  <div><b id="query-name">{{ query_name }}</b><br>
  <span class="muted" id="timing">query model {{ "%.1f"|format(result.model_ms) }} ms
  ({{ result.size[0] }}×{{ result.size[1] }} px) · search
  {{ "%.1f"|format(result.search_ms) }} ms</span></div>
</div>
<div class="grid" id="results">
  {% for hit in result.hits %}
  <figure class="hit" data-rank="{{ loop.index }}" data-path="{{ hit.path }}"
          data-score="{{ "%.6f"|format(hit.score) }}">
    <img src="/images/{{ hit.row }}" alt="{{ hit.path }}" loading="eager">
    <figcaption>#{{ loop.index }} · {{ "%.4f"|format(hit.score) }}<br>
      {{ hit.path.rsplit("/", 1)[-1] }}</figcaption>
  </figure>
  {% endfor %}
</div>
{% endif %}
</body>
</html>
"""
