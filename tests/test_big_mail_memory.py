"""A 25 MB reply with a photo: DATA, spool, load and parse each cost little more than the mail.

parse_mail cuts big leaf bodies out before the feedparser sees them (see
tree._parse_cut); every test of the cutting compares its result with
the full parse of the same bytes, field by field, so "cheaper" never means
"different".
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import gc
import hashlib
import os
import random
import sys
import tracemalloc
from pathlib import Path

import pytest

from daemon.mail import parsing as inbound_mail, parts, tree
from daemon.mail.parsing import attachment_data, parse_mail
from daemon.intake.smtp import _EnhancedCodes
from daemon.intake.spool import store_message
from daemon.store.models import InboundMessage, load_raw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from smtp_ingest import photo_reply  # noqa: E402

MAILS = Path(__file__).with_name("mails")
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
MB25 = 25 * 2**20
OWNER_KEEP = inbound_mail.KEEP_ATTACHMENT_BYTES


def full_parse(raw, **kwargs):
    """parse_mail as it was: the feedparser sees every byte."""
    saved = tree._parse_cut
    tree._parse_cut = lambda raw: None
    try:
        return parse_mail(raw, **kwargs)
    finally:
        tree._parse_cut = saved


def assert_same(raw: bytes, keeps=(0, 60, OWNER_KEEP)) -> None:
    for keep in keeps:
        cut, full = parse_mail(raw, keep_attachment_bytes=keep), full_parse(raw, keep_attachment_bytes=keep)
        if cut != full:
            differing = [f.name for f in dataclasses.fields(cut) if getattr(cut, f.name) != getattr(full, f.name)]
            pytest.fail(f"keep={keep}: {differing} differ for {raw[:300]!r}")


def peak_of(fn):
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


# ---- parse_mail: the same result, at a fraction of the memory ---------------------------

def test_25mb_photo_reply_parses_in_a_fraction_of_its_size():
    raw = photo_reply("reply+x@shop.example", MB25)
    parsed, peak = peak_of(lambda: parse_mail(raw, envelope_from="erika@example.org", keep_attachment_bytes=0))
    assert peak <= 0.25 * len(raw), f"peak {peak / len(raw):.2f}x the message size"
    [photo] = parsed.attachments
    assert (photo.filename, photo.content_type, photo.data) == ("schaden.jpg", "image/jpeg", None)
    assert photo.size == len(base64.b64decode(raw.split(b"base64\r\n\r\n", 1)[1].rsplit(b"--b--", 1)[0]))
    assert parsed.text == "Das Foto vom Schaden." and parsed.defects == ()
    assert parsed == full_parse(raw, envelope_from="erika@example.org", keep_attachment_bytes=0)


def test_owner_mail_still_gets_the_decoded_file_for_little_more_than_its_size():
    raw = photo_reply("owner@shop.example", MB25)
    parsed, peak = peak_of(lambda: parse_mail(raw))
    [photo] = parsed.attachments
    assert photo.data is not None and len(photo.data) == photo.size
    assert peak <= photo.size + 0.25 * len(raw), f"peak {peak / len(raw):.2f}x the message size"
    assert photo.data == attachment_data(raw, 0)


@functools.lru_cache(maxsize=1)
def _shapes() -> dict[str, bytes]:
    data = random.Random(7).randbytes(600_000)
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    one_line = base64.b64encode(data)
    head = (b"From: Erika <erika@example.org>\r\nTo: orders@shop.example\r\nSubject: Re: 1042\r\n"
            b"Message-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n")
    part = (b"--b\r\nContent-Type: image/jpeg; name=\"a.jpg\"\r\nContent-Disposition: attachment\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    text = b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei.\r\n"
    mixed = head + b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
    return {
        "photo": mixed + text + part + b64 + b"--b--\r\n",
        "two photos and html": mixed + b"--b\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
            b"--a\r\nContent-Type: text/plain\r\n\r\nhi\r\n--a\r\nContent-Type: text/html\r\n\r\n"
            + b"<p>hi</p>\r\n" * 20_000 + b"--a--\r\n" + part + b64 + part + b64 + b"--b--\r\nepilogue\r\n",
        "padding inside and junk": mixed + text + part + b64[:300_000] + b"QQ==\r\n*!\xff\r\n" + b64 + b"--b--\r\n",
        "damaged base64": mixed + text + part + b64[:-10] + b"A\r\n--b--\r\n",
        "lines not a multiple of 4": mixed + text + part
            + b"\r\n".join(one_line[i:i + 73] for i in range(0, len(one_line), 73)) + b"\r\n--b--\r\n",
        "no close boundary": mixed + text + part + b64,
        "no final newline": head + b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64[:-2],
        "single part photo": head + b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64,
        "lf only": (mixed + text + part + b64 + b"--b--\r\n").replace(b"\r\n", b"\n"),
        "bare cr in body": mixed + text + part + b64[:1000] + b"\rX\r\n" + b64 + b"--b--\r\n",
        "binary 8bit": mixed + text + b"--b\r\nContent-Type: application/octet-stream\r\n\r\n"
            + data.replace(b"\n--", b"\n..") + b"\r\n--b--\r\n",
        "quoted-printable": mixed + text + b"--b\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + b"abc=3D=\r\n" * 40_000 + b"--b--\r\n",
        "uuencode": mixed + text + b"--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
            + b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, 300_000, 45)) + b"`\r\nend\r\n--b--\r\n",
        "big text with dash lines": head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            + (b"Gr\xc3\xbc\xc3\x9fe\r\n-- \r\nFrom: x\r\n\r\n" + b"q" * 70 + b"\r\n") * 5_000,
        "big html with comments": mixed + b"--b\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n"
            + b"<p>Gr\xfc\xdfe</p>\r\n--><!--\r\n" * 10_000 + b"--b--\r\n",
        "forwarded message with photo": mixed + text + b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
            + mixed + text + part + b64 + b"--b--\r\n" + b"--b--\r\n",
        "delivery report": head + b"Content-Type: multipart/report; boundary=b\r\n\r\n" + text
            + b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <x@y>\r\n" + b"X: y\r\n" * 20_000
            + b"--b--\r\n",
        "wrong boundary": mixed.replace(b'"b"', b'"c"') + text + part + b64 + b"--b--\r\n",
        "header without blank line": mixed + text + b"--b\r\nContent-Type: image/png\r\nnot a header\r\n"
            + b64 + b"--b--\r\n",
        "our placeholder text in a body": mixed + text.replace(b"Anbei.", b"ordermail-cut-0123-0") + part + b64
            + b"--b--\r\n",
    }


# the rest is parsed in full: no body of 64 KB without a line starting with "--" or
# without a bare CR, or a placeholder that did not land as it must (wrong boundary)
NOT_CUT = {"no final newline", "bare cr in body", "binary 8bit", "big text with dash lines",
           "big html with comments", "wrong boundary", "header without blank line"}


@pytest.mark.parametrize("shape", sorted(_shapes()))
def test_big_mails_parse_exactly_as_the_full_parse_does(shape):
    raw = _shapes()[shape]
    assert (tree._parse_cut(raw) is None) == (shape in NOT_CUT)
    assert_same(raw)


def _test_mails() -> list[Path]:
    return sorted(p for p in MAILS.rglob("*") if p.is_file())


def _corpus_mails() -> list[Path]:
    return sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.suffix not in (".json", ".md")
                  and p.name != "LICENSE_NOTE.txt")


def _parse_the_same_with_every_body_cut(monkeypatch, files: list[Path]) -> int:
    """How many of `files` were cut somewhere; each parsed the same as in full."""
    monkeypatch.setattr(tree, "CUT_MIN", 1)
    cut_somewhere = 0
    for path in files:
        raw = path.read_bytes()
        cut_somewhere += tree._parse_cut(raw) is not None
        assert_same(raw)
    return cut_somewhere


def test_every_test_mail_parses_the_same_with_every_body_cut(monkeypatch):
    # 17 of the repository's own mails have a body to cut: the comparison is not vacuous
    assert _parse_the_same_with_every_body_cut(monkeypatch, _test_mails()) >= 15


def test_every_corpus_mail_parses_the_same_with_every_body_cut(monkeypatch):
    if not CORPORA.is_dir():
        pytest.skip(f"mail corpora not found at {CORPORA} (they come with the project's shared folder)")
    assert _parse_the_same_with_every_body_cut(monkeypatch, _corpus_mails()) >= 50   # 61 when written


def _random_part(rng: random.Random, depth: int, nl: bytes) -> bytes:
    """A MIME part of a random shape, with the quirks real mail has now and then."""
    quirk = rng.random
    kind = rng.choice(["text", "html", "b64", "b64", "raw", "qp"] + (["multi", "multi", "rfc822"] if depth < 3 else []))
    if kind == "multi":
        boundary = rng.choice([b"b", b"==x==", b"a" * 70, b"nested" + str(depth).encode()])
        subtype = rng.choice([b"mixed", b"alternative", b"digest", b"related"])
        head = [b"Content-Type: multipart/" + subtype + b"; boundary=\"" + boundary + b"\""]
        body = b"preamble" + nl if quirk() < 0.2 else b""
        for _ in range(rng.randint(0, 3)):
            body += b"--" + boundary + nl + _random_part(rng, depth + 1, nl) + nl
        if quirk() < 0.85:
            body += b"--" + boundary + b"--" + nl
        if quirk() < 0.2:
            body += b"epilogue" + nl
    elif kind == "rfc822":
        head = [b"Content-Type: message/rfc822"]
        body = b"From: x@example.org" + nl + b"Message-ID: <in@x>" + nl + _random_part(rng, depth + 1, nl)
    else:
        ctype = {"text": b"text/plain; charset=utf-8", "html": b"text/html",
                 "b64": rng.choice([b"image/jpeg", b"text/plain", b"application/pdf"]),
                 "raw": b"application/octet-stream", "qp": b"text/plain"}[kind]
        head = [b"Content-Type: " + ctype]
        if kind == "b64":
            head.append(b"Content-Transfer-Encoding: base64")
            encoded = base64.b64encode(rng.randbytes(rng.randint(0, 3000)))
            width = rng.choice([76, 76, 72, 73, 4])
            lines = [encoded[i:i + width] for i in range(0, len(encoded), width)]
            for _ in range(rng.randint(0, 2) if quirk() < 0.3 else 0):
                lines.insert(rng.randint(0, len(lines)), rng.choice([b"==", b"*!", b"\xff\xfe", b"A", b"QQ=="]))
            body = nl.join(lines) + nl
        elif kind == "qp":
            head.append(b"Content-Transfer-Encoding: quoted-printable")
            body = (b"Gr=C3=BC=C3=9Fe =" + nl + b"line=3D" + nl) * rng.randint(0, 200)
        else:
            body = b"".join(rng.choice([b"text line", b"-- ", b"--not a boundary", b"From: fake",
                                        b"Gr\xc3\xbc\xc3\x9fe", b"", b"<p>x</p>", b"a\rb", b"> quote"]) + nl
                            for _ in range(rng.randint(0, 400)))
        if quirk() < 0.3:
            head.append(b"Content-Disposition: " + rng.choice([b"attachment; filename=f.bin", b"inline"]))
    if quirk() < 0.05:
        head.append(b"not a header line")
    separator = b"" if quirk() < 0.05 else nl
    return nl.join(head) + nl + separator + body


def test_random_mime_shapes_parse_the_same_with_every_body_cut(monkeypatch):
    monkeypatch.setattr(tree, "CUT_MIN", 1)
    rng = random.Random(20240611)
    for _ in range(400):
        nl = rng.choice([b"\r\n", b"\r\n", b"\n"])
        raw = b"From: a@example.com" + nl + b"Subject: s" + nl + _random_part(rng, 0, nl)
        if rng.random() < 0.1:
            raw = raw.rstrip(b"\r\n")
        assert_same(raw, keeps=(0, 100, OWNER_KEEP))


def test_base64_is_counted_exactly_as_it_would_be_decoded():
    rng = random.Random(5)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    counted = 0
    for _ in range(20_000):
        lines = []
        for _ in range(rng.randint(0, 8)):
            pick = rng.random()
            if pick < 0.5:
                line = bytes(rng.choice(alphabet) for _ in range(rng.choice([4, 8, 76, 3, 5, rng.randint(0, 20)])))
            elif pick < 0.7:
                line = bytes(rng.choice(b"AB=\x80\xff -*.") for _ in range(rng.randint(0, 6)))
            elif pick < 0.85:
                line = b"=" * rng.randint(1, 3)
            else:
                line = base64.b64encode(rng.randbytes(rng.randint(0, 10)))
            lines.append(line + rng.choice([b"\r\n", b"\n"]))
        raw = b"xx" + b"".join(lines) + b"yy"
        defects: list[str] = []
        decoded = parts._b64decode(memoryview(raw)[2:-2], defects)
        size = tree._b64_size(raw, 2, len(raw) - 2)
        if size is not None:
            counted += 1
            assert size == (len(decoded), bool(defects)), raw
    assert counted > 10_000


# ---- DATA, spool, load ------------------------------------------------------------------

class _Session:
    data_size_limit = 30_000_000


def _read_data(wire: bytes, limit: int = 30_000_000):
    """Run the door's DATA reader on `wire`, fed as a socket would feed it."""
    session = _Session()
    session.data_size_limit = limit

    async def run():
        reader = session._reader = asyncio.StreamReader(limit=limit + 2)

        async def feed():
            view = memoryview(wire)
            for start in range(0, len(wire), 65_536):
                reader.feed_data(view[start:start + 65_536])
                await asyncio.sleep(0)
            reader.feed_eof()
        feeder = asyncio.ensure_future(feed())
        content = await _EnhancedCodes._read_data(session)
        await feeder
        return content

    loop = asyncio.new_event_loop()     # long-lived in the daemon; asyncio.run adds its own peak
    try:
        return peak_of(lambda: loop.run_until_complete(run()))
    finally:
        loop.close()


def test_data_is_read_unstuffed_into_one_bytes_object_without_a_second_copy():
    raw = photo_reply("reply+x@shop.example", 8 * 2**20).replace(b"\r\n/9j/", b"\r\n./9j/", 3)
    wire = raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    content, peak = _read_data(wire)
    assert type(content) is bytes and content == raw
    assert peak <= 1.3 * len(raw), f"peak {peak / len(raw):.2f}x the message size"


def test_data_over_the_limit_is_dropped():
    content, _ = _read_data(b"x" * 100 + b"\r\n" + b"y\r\n" * 10 + b".\r\n", limit=50)
    assert content is None


def test_stored_bytes_come_back_exactly(store):
    raws = [os.urandom(3 * 2**20) + b"\x00\r\n.\r\n", b"Message-ID: <a@b>\r\n\r\nx", b""]
    ids = []
    with store.atomic():
        for raw in raws:
            ids.append(store_message(raw, channel="smtp", envelope_from="a@example.org", recipients=["o@shop"]))
    for raw, message_id in zip(raws, ids):
        row = InboundMessage.get_by_id(message_id)
        assert (row.size, row.sha256, row.state) == (len(raw), hashlib.sha256(raw).hexdigest(), "new")
        assert row.raw == raw
        loaded = load_raw(message_id)
        assert type(loaded) is bytes and loaded == raw
    assert InboundMessage.get_by_id(ids[1]).message_id == "<a@b>"
    assert load_raw(max(ids) + 1) is None


def test_a_failed_transaction_keeps_no_half_written_message(store):
    raw = os.urandom(2**20)
    with pytest.raises(RuntimeError):
        with store.atomic():
            store_message(raw, channel="smtp", envelope_from="", recipients=[])
            raise RuntimeError("rolled back")
    assert InboundMessage.select().count() == 0


def test_storing_and_loading_make_no_extra_copy_in_python(store):
    raw = photo_reply("reply+x@shop.example", 8 * 2**20)

    def put():
        with store.atomic():
            return store_message(raw, channel="smtp", envelope_from="e@example.org", recipients=["r@shop"])
    message_id, stored_peak = peak_of(put)
    loaded, load_peak = peak_of(lambda: load_raw(message_id))
    assert loaded == raw
    if store.backend == "sqlite":   # psycopg2 sends and receives bytea as hex text: copies
        assert stored_peak <= 0.1 * len(raw), f"store_message peak {stored_peak / len(raw):.2f}x"
        assert load_peak <= 1.1 * len(raw), f"load_raw peak {load_peak / len(raw):.2f}x"
