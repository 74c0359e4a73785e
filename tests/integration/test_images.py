"""The images service through Google's SDK (google.appengine.api.images)
against bin/cz-apiserver: real JPEG, PNG, WebP and GIF files made here with
Pillow, transformed, composited and measured by the server (libvips), and
the results decoded again with Pillow to check sizes, formats and, where the
result is exact, pixel values. Every documented error is provoked, through
the SDK where it lets the request through and on the wire where it does not.
Images by blob key read the blob store's local directory, where the test puts
the blob as the store's local driver lays it out."""
import io
import os
import struct
import zlib

import pytest
from PIL import Image

from apiserver_sdk import ApiServer, raw_call, restore, use_ticket
from conftest import SANITIZED

from google.appengine.api import images
from google.appengine.api.images import images_service_pb2 as pb
from google.appengine.runtime import apiproxy_errors

APP = "dev~imgapp"
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
FORMATS = ["JPEG", "PNG", "WEBP", "GIF"]


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    s = ApiServer(str(home))
    use_ticket(s, s.mint(APP))
    yield s
    restore()
    s.stop()


def halves(w=40, h=20, left=RED, right=BLUE, mode="RGB"):
    """An image whose left half is one colour and right half another."""
    im = Image.new(mode, (w, h), left)
    im.paste(Image.new(mode, (w - w // 2, h), right), (w // 2, 0))
    return im


def encode(im, fmt, **kw):
    b = io.BytesIO()
    if fmt == "WEBP":
        kw.setdefault("lossless", True)
    im.save(b, fmt, **kw)
    return b.getvalue()


def decode(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def rgb(im, xy):
    return im.convert("RGB").getpixel(xy)


def near(a, b, tol=2):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def app_error(service_call, *args):
    with pytest.raises(apiproxy_errors.ApplicationError) as e:
        service_call(*args)
    return e.value


def transform_call(req):
    return raw_call("images", "Transform", req, pb.ImagesTransformResponse())


class Wire:
    """A request as exact bytes, for values the SDK's messages cannot hold
    (enum values outside the protocol). The SDK's stub only serializes it."""

    def __init__(self, msg, old=b"", new=b"", append=b""):
        data = msg.SerializeToString()
        if old:
            i = data.rfind(old)
            assert i >= 0
            data = data[:i] + new + data[i + len(old):]
        self.data = data + append

    def SerializeToString(self):
        return self.data


def png_header_only(w, h):
    """A PNG whose header claims w x h (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# ---- every format, every transform ----

@pytest.mark.parametrize("fmt", FORMATS)
def test_resize_keeps_aspect_in_every_format(server, fmt):
    src = encode(halves(), fmt)
    out = decode(images.resize(src, 20))
    assert out.format == "PNG" and out.size == (20, 10)
    assert decode(images.resize(src, height=5)).size == (10, 5)
    assert decode(images.resize(src, 30, 5)).size == (10, 5)     # the more restricting side
    assert decode(images.resize(src, 100, 100)).size == (100, 50)   # enlarges too
    small = decode(images.resize(src, 4))
    assert small.size == (4, 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_flip_rotate_crop_pixels_in_every_format(server, fmt):
    src = encode(halves(), fmt)
    tol = 40 if fmt == "JPEG" else 0
    flipped = decode(images.horizontal_flip(src))
    assert flipped.size == (40, 20)
    assert near(rgb(flipped, (2, 10)), BLUE, tol) and near(rgb(flipped, (37, 10)), RED, tol)
    rot = decode(images.rotate(src, 90))                 # clockwise: left half goes on top
    assert rot.size == (20, 40)
    assert near(rgb(rot, (10, 2)), RED, tol) and near(rgb(rot, (10, 37)), BLUE, tol)
    left = decode(images.crop(src, 0.0, 0.0, 0.5, 1.0))
    assert left.size == (20, 20)
    assert all(near(rgb(left, (x, y)), RED, tol) for x in (0, 10, 17) for y in (0, 19))


def test_exact_pixels_of_lossless_results(server):
    im = Image.new("RGB", (3, 2))
    im.putdata([(10, 20, 30), (40, 50, 60), (70, 80, 90), (1, 2, 3), (4, 5, 6), (7, 8, 9)])
    src = encode(im, "PNG")
    h = decode(images.horizontal_flip(src)).convert("RGB")
    assert list(h.getdata()) == [(70, 80, 90), (40, 50, 60), (10, 20, 30), (7, 8, 9), (4, 5, 6), (1, 2, 3)]
    v = decode(images.vertical_flip(src)).convert("RGB")
    assert list(v.getdata()) == [(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 20, 30), (40, 50, 60), (70, 80, 90)]
    r = decode(images.rotate(src, 90)).convert("RGB")
    assert r.size == (2, 3)
    assert list(r.getdata()) == [(1, 2, 3), (10, 20, 30), (4, 5, 6), (40, 50, 60), (7, 8, 9), (70, 80, 90)]
    r180 = decode(images.rotate(src, 180)).convert("RGB")
    assert list(r180.getdata()) == list(reversed(list(im.getdata())))
    r270 = decode(images.rotate(src, -90)).convert("RGB")            # the SDK sends 270
    assert list(r270.getdata()) == [(70, 80, 90), (7, 8, 9), (40, 50, 60), (4, 5, 6),
                                    (10, 20, 30), (1, 2, 3)]
    assert list(decode(images.rotate(src, 360)).convert("RGB").getdata()) == list(im.getdata())
    c = decode(images.crop(src, 1 / 3, 0.5, 1.0, 1.0)).convert("RGB")
    assert list(c.getdata()) == [(4, 5, 6), (7, 8, 9)]


def test_vertical_flip_two_colours(server):
    im = Image.new("RGB", (10, 10), GREEN)
    im.paste(Image.new("RGB", (10, 5), RED), (0, 0))
    out = decode(images.vertical_flip(encode(im, "GIF")))
    assert rgb(out, (5, 0)) == GREEN and rgb(out, (5, 9)) == RED


def test_resize_crop_to_fit_and_offsets(server):
    src = encode(halves(40, 20), "PNG")
    centre = decode(images.resize(src, 10, 10, crop_to_fit=True))
    assert centre.size == (10, 10)
    left = decode(images.resize(src, 10, 10, crop_to_fit=True, crop_offset_x=0.0))
    right = decode(images.resize(src, 10, 10, crop_to_fit=True, crop_offset_x=1.0))
    assert all(rgb(left, (x, 5)) == RED for x in range(10))
    assert all(rgb(right, (x, 5)) == BLUE for x in range(10))
    tall = decode(images.resize(src, 5, 20, crop_to_fit=True))
    assert tall.size == (5, 20)


def test_resize_allow_stretch(server):
    src = encode(halves(40, 20), "PNG")
    out = decode(images.resize(src, 10, 30, allow_stretch=True))
    assert out.size == (10, 30)
    assert rgb(out, (0, 15)) == RED and rgb(out, (9, 15)) == BLUE


def test_im_feeling_lucky_stretches_levels(server):
    # Two greys, 50 and 200: the stretch maps them to black and white.
    src = encode(halves(20, 10, (50, 50, 50), (200, 200, 200)), "PNG")
    out = decode(images.im_feeling_lucky(src))
    assert out.size == (20, 10)
    assert rgb(out, (0, 0)) == (0, 0, 0) and rgb(out, (19, 9)) == (255, 255, 255)
    # Per channel: a red cast (red 100..200, blue 10..60) is removed.
    im = halves(20, 10, (100, 30, 10), (200, 90, 60))
    out = decode(images.im_feeling_lucky(encode(im, "PNG")))
    assert rgb(out, (0, 0)) == (0, 0, 0) and rgb(out, (19, 0)) == (255, 255, 255)
    # A flat image has nothing to stretch.
    flat = decode(images.im_feeling_lucky(encode(Image.new("RGB", (8, 8), (90, 90, 90)), "PNG")))
    assert rgb(flat, (3, 3)) == (90, 90, 90)


def test_transforms_apply_in_order(server):
    img = images.Image(encode(halves(40, 20), "PNG"))
    img.resize(20)                  # 20x10
    img.rotate(90)                  # 10x20, red on top
    img.crop(0.0, 0.0, 1.0, 0.5)    # the red top half: 10x10
    img.horizontal_flip()
    out = decode(img.execute_transforms(output_encoding=images.PNG))
    assert out.size == (10, 10) and img.width == 10 and img.height == 10
    assert all(rgb(out, (x, y)) == RED for x in (0, 9) for y in (0, 8))
    img2 = images.Image(encode(halves(40, 20), "PNG"))
    img2.crop(0.0, 0.0, 0.5, 1.0)   # crop first, then resize: a different picture
    img2.resize(10)
    out2 = decode(img2.execute_transforms())
    assert out2.size == (10, 10) and rgb(out2, (9, 5)) == RED


@pytest.mark.parametrize("enc,name", [(images.JPEG, "JPEG"), (images.PNG, "PNG"), (images.WEBP, "WEBP")])
def test_output_encodings(server, enc, name):
    out = decode(images.resize(encode(halves(), "PNG"), 20, output_encoding=enc))
    assert out.format == name and out.size == (20, 10)


def test_quality_changes_jpeg_and_webp(server):
    noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    src = encode(noisy, "PNG")
    for enc in (images.JPEG, images.WEBP):
        lo = images.resize(src, 64, output_encoding=enc, quality=5)
        hi = images.resize(src, 64, output_encoding=enc, quality=95)
        assert len(lo) < len(hi) / 2
        assert decode(lo).size == decode(hi).size == (64, 64)


def test_no_gif_output_on_the_wire(server):
    # The protocol has no GIF value and Cyclozzo offers none: mime_type 3 is
    # refused like any unknown encoding (GIF input is read, see above).
    req = pb.ImagesTransformRequest()
    req.image.content = encode(halves(), "GIF")
    req.transform.add().horizontal_flip = True
    req.output.mime_type = pb.OutputSettings.PNG
    e = app_error(transform_call, Wire(req, append=b"\x1a\x02\x08\x03"))   # mime_type 3
    assert e.application_error == pb.ImagesServiceError.BAD_TRANSFORM_DATA and "encoding 3" in e.error_detail


def test_alpha_kept_in_png_and_flattened_in_jpeg(server):
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    im.paste(Image.new("RGBA", (5, 10), (255, 0, 0, 255)), (0, 0))
    src = encode(im, "PNG")
    png = decode(images.horizontal_flip(src))
    assert png.mode == "RGBA" and png.getpixel((9, 5)) == (255, 0, 0, 255) and png.getpixel((0, 5))[3] == 0
    img = images.Image(src)
    img.horizontal_flip()
    jpg = decode(img.execute_transforms(output_encoding=images.JPEG,
                                        transparent_substitution_rgb=0x00FF00))
    assert jpg.mode == "RGB" and near(rgb(jpg, (1, 5)), GREEN, 30) and near(rgb(jpg, (8, 5)), RED, 30)


# ---- metadata and orientation ----

def exif_jpeg(w, h, orientation=None, **tags):
    im = halves(w, h)
    ex = Image.Exif()
    if orientation:
        ex[274] = orientation
    for tag, value in tags.items():
        ex[tag] = value
    return encode(im, "JPEG", exif=ex.tobytes(), quality=95)


def test_correct_orientation(server):
    src = exif_jpeg(40, 20, orientation=6)            # stored landscape, shown rotated 90 cw
    plain = images.Image(src)
    plain.rotate(0)
    assert decode(plain.execute_transforms()).size == (40, 20)
    img = images.Image(src)
    img.set_correct_orientation(images.CORRECT_ORIENTATION)
    img.rotate(0)
    out = decode(img.execute_transforms())
    assert out.size == (20, 40)
    assert near(rgb(out, (10, 2)), RED, 40) and near(rgb(out, (10, 37)), BLUE, 40)
    # Already portrait: App Engine leaves it alone.
    img = images.Image(exif_jpeg(20, 40, orientation=6))
    img.set_correct_orientation(images.CORRECT_ORIENTATION)
    img.resize(10)
    assert decode(img.execute_transforms()).size == (10, 20)


def test_source_metadata(server):
    src = exif_jpeg(40, 20, orientation=1)
    img = images.Image(src)
    img.resize(10)
    img.execute_transforms()
    assert img.get_original_metadata() == {"ImageWidth": 40, "ImageLength": 20}

    ex = Image.Exif()
    ex[271] = "Cyclozzo Camera"          # Make
    ex[272] = "Model 1"                  # Model
    ex[274] = 1
    ex[306] = "2024:02:03 04:05:06"      # DateTime
    ex[0x8769] = {36867: "2021:01:02 03:04:05",      # EXIF IFD: DateTimeOriginal,
                  34855: 200}                        # ISOSpeedRatings
    ex[0x8825] = {1: "S", 2: (33.0, 51.0, 36.0),     # GPS IFD
                  3: "E", 4: (151.0, 12.0, 36.0)}
    src = encode(halves(40, 20), "JPEG", exif=ex.tobytes())
    img = images.Image(src)
    img.resize(10)
    img.execute_transforms(parse_source_metadata=True)
    md = img.get_original_metadata()
    assert md["ImageWidth"] == 40 and md["ImageLength"] == 20
    assert md["Make"] == "Cyclozzo Camera" and md["Model"] == "Model 1"
    assert md["Orientation"] == 1 and md["ISOSpeedRatings"] == 200
    assert md["DateTime"] == "2024:02:03 04:05:06"
    assert md["DateTimeOriginal"] == 1609556645       # 2021-01-02T03:04:05Z
    assert abs(md["GPSLatitude"] - -33.86) < 1e-6
    assert abs(md["GPSLongitude"] - 151.21) < 1e-6


# ---- histogram and composite ----

def test_histogram(server):
    for fmt in ("PNG", "GIF", "WEBP"):
        r, g, b = images.histogram(encode(halves(40, 20), fmt))
        assert len(r) == len(g) == len(b) == 256
        assert r[255] == 400 and r[0] == 400 and g[0] == 800 and b[255] == 400 and b[0] == 400
        assert sum(r) == sum(g) == sum(b) == 800
    # Transparent pixels count as black, half-transparent at half value.
    im = Image.new("RGBA", (4, 1))
    im.putdata([(255, 255, 255, 255), (255, 255, 255, 0), (200, 100, 50, 255), (255, 255, 255, 128)])
    r, g, b = images.histogram(encode(im, "PNG"))
    assert r[255] == 1 and r[0] == 1 and r[200] == 1 and r[128] == 1
    assert g[100] == 1 and b[50] == 1


def test_composite(server):
    red = encode(Image.new("RGB", (10, 10), RED), "PNG")
    blue = encode(Image.new("RGB", (20, 10), BLUE), "JPEG", quality=100)
    out = decode(images.composite(
        [(red, 0, 0, 1.0, images.TOP_LEFT),
         (blue, 0, 0, 1.0, images.BOTTOM_RIGHT),
         (red, 5, -5, 0.5, images.CENTER_CENTER)],
        100, 50, color=0xFF00FF00))
    assert out.size == (100, 50) and out.format == "PNG"
    assert rgb(out, (0, 0)) == RED and rgb(out, (9, 9)) == RED and rgb(out, (10, 10)) == GREEN
    assert near(rgb(out, (99, 49)), BLUE, 3) and near(rgb(out, (80, 40)), BLUE, 3)
    assert rgb(out, (79, 40)) == GREEN
    # centred 10x10 at (45, 20), moved by (5, -5): (50..59, 15..24), half red over green
    assert near(rgb(out, (55, 20)), (128, 128, 0), 2) and rgb(out, (49, 20)) == GREEN
    # A transparent canvas stays transparent in PNG; JPEG output has no alpha.
    t = decode(images.composite([(red, 0, 0, 1.0, images.TOP_LEFT)], 20, 20, color=0))
    assert t.mode == "RGBA" and t.getpixel((15, 15))[3] == 0 and t.getpixel((5, 5)) == (255, 0, 0, 255)
    j = decode(images.composite([(red, -5, 0, 1.0, images.TOP_RIGHT)], 20, 20,
                                color=0xFFFFFFFF, output_encoding=images.JPEG))
    assert j.format == "JPEG" and j.size == (20, 20)
    assert near(rgb(j, (12, 5)), RED, 30) and near(rgb(j, (17, 5)), (255, 255, 255), 30)
    # Wholly outside the canvas: nothing drawn, no error.
    o = decode(images.composite([(red, 4000, 4000, 1.0, images.TOP_LEFT)], 8, 8, color=0xFF0000FF))
    assert rgb(o, (4, 4)) == BLUE


# ---- errors ----

def test_not_an_image(server):
    with pytest.raises(images.NotImageError):
        images.resize(b"definitely not a picture", 10)
    bmp = encode(Image.new("RGB", (4, 4)), "BMP")
    with pytest.raises(images.NotImageError):
        images.resize(bmp, 2)
    req = pb.ImagesTransformRequest()
    req.image.content = b""
    req.transform.add().horizontal_flip = True
    req.output.mime_type = pb.OutputSettings.PNG
    assert app_error(transform_call, req).application_error == pb.ImagesServiceError.NOT_IMAGE


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_and_corrupt_images(server, fmt):
    noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    data = encode(noisy, fmt)
    with pytest.raises(images.BadImageError):
        images.resize(data[:len(data) // 2], 10)
    with pytest.raises((images.BadImageError, images.NotImageError)):
        images.resize(data[:16], 10)


def test_decompression_bomb_refused(server):
    with pytest.raises(images.LargeImageError):
        images.resize(png_header_only(20000, 20000), 10)      # 400 MP
    with pytest.raises(images.LargeImageError):
        images.histogram(png_header_only(50001, 1000))
    with pytest.raises(images.LargeImageError):                # result too large
        images.resize(encode(Image.new("RGB", (1, 20000)), "PNG"), 4000)
    # The server stays up and correct afterwards.
    assert decode(images.resize(encode(halves(), "PNG"), 20)).size == (20, 10)


def bad_transform(**fields):
    req = pb.ImagesTransformRequest()
    req.image.content = encode(halves(), "PNG")
    req.output.mime_type = pb.OutputSettings.PNG
    t = req.transform.add()
    for k, v in fields.items():
        setattr(t, k, v)
    return req


@pytest.mark.parametrize("fields", [
    {"width": 5000}, {"height": -1}, {"width": 0, "height": 0},
    {"width": 10, "crop_to_fit": True}, {"height": 10, "allow_stretch": True},
    {"width": 10, "crop_offset_x": 1.5}, {"width": 10, "crop_offset_y": -0.1},
    {"rotate": 45}, {"crop_left_x": 0.6, "crop_right_x": 0.5}, {"crop_top_y": 0.5, "crop_bottom_y": 0.5},
    {"crop_left_x": -0.5}, {"crop_bottom_y": 2.0},
    {}, {"width": 10, "rotate": 90}, {"horizontal_flip": True, "vertical_flip": True},
])
def test_bad_transform_data(server, fields):
    e = app_error(transform_call, bad_transform(**fields))
    assert e.application_error == pb.ImagesServiceError.BAD_TRANSFORM_DATA
    assert e.error_detail


def test_bad_output_and_too_many_transforms(server):
    req = bad_transform(horizontal_flip=True)
    req.output.quality = 101
    assert app_error(transform_call, req).application_error == pb.ImagesServiceError.BAD_TRANSFORM_DATA
    e = app_error(transform_call, Wire(bad_transform(horizontal_flip=True), append=b"\x1a\x02\x08\x07"))
    assert e.application_error == pb.ImagesServiceError.BAD_TRANSFORM_DATA and "encoding" in e.error_detail
    req = bad_transform(horizontal_flip=True)
    for _ in range(10):
        req.transform.add().vertical_flip = True
    assert app_error(transform_call, req).application_error == pb.ImagesServiceError.BAD_TRANSFORM_DATA
    # The SDK refuses these before sending; the messages it raises are its own.
    with pytest.raises(images.BadRequestError):
        images.resize(encode(halves(), "PNG"), 5000)


def test_bad_composites(server):
    red = encode(Image.new("RGB", (4, 4), RED), "PNG")

    def comp(width=10, height=10, n_images=1, **opt):
        req = pb.ImagesCompositeRequest()
        for _ in range(n_images):
            req.image.add().content = red
        o = req.options.add()
        o.source_index, o.x_offset, o.y_offset, o.opacity, o.anchor = 0, 0, 0, 1.0, 0
        bad_anchor = opt.pop("anchor", None)
        for k, v in opt.items():
            setattr(o, k, v)
        req.canvas.width, req.canvas.height = width, height
        req.canvas.output.mime_type = pb.OutputSettings.PNG
        if bad_anchor is not None:                     # the SDK's enum stops at 8
            o.anchor = 8
            req = Wire(req, b"\x28\x08", b"\x28" + bytes([bad_anchor]))
        return raw_call("images", "Composite", req, pb.ImagesCompositeResponse())

    assert comp().image.width == 10
    for kw in ({"width": 0}, {"height": 4001}, {"source_index": 1}, {"source_index": -1},
               {"opacity": 1.5}, {"anchor": 9}, {"n_images": 17}):
        e = app_error(lambda: comp(**kw))
        assert e.application_error == pb.ImagesServiceError.BAD_TRANSFORM_DATA, kw
    bomb = pb.ImagesCompositeRequest()
    bomb.image.add().content = png_header_only(8000, 8000)
    o = bomb.options.add()
    o.source_index, o.x_offset, o.y_offset, o.opacity, o.anchor = 0, 0, 0, 1.0, 0
    bomb.canvas.width = bomb.canvas.height = 10
    bomb.canvas.output.mime_type = pb.OutputSettings.PNG
    e = app_error(raw_call, "images", "Composite", bomb, pb.ImagesCompositeResponse())
    assert e.application_error == pb.ImagesServiceError.IMAGE_TOO_LARGE


# ---- blob keys and serving URLs ----

def put_blob(server, key, data):
    """Store a blob as the blob store's local driver does: DIR/<app>/<k0k1>/<key>."""
    d = os.path.join(server.home, "blobs", APP, key[:2])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, key), "wb") as f:
        f.write(data)


def test_images_by_blob_key(server):
    put_blob(server, "photoKey_1", encode(halves(40, 20), "PNG"))
    img = images.Image(blob_key="photoKey_1")
    img.resize(20)
    out = decode(img.execute_transforms())
    assert out.size == (20, 10) and rgb(out, (0, 0)) == RED
    assert images.Image(blob_key="photoKey_1").histogram()[0][255] == 400


def test_blob_key_errors(server):
    for key, err in (("noSuchBlob", images.ObjectNotFoundError), ("bad/key", images.InvalidBlobKeyError)):
        img = images.Image(blob_key=key)
        img.resize(10)
        with pytest.raises(err):
            img.execute_transforms()
    put_blob(server, "notAnImage", b"hello")
    img = images.Image(blob_key="notAnImage")
    img.resize(10)
    with pytest.raises(images.NotImageError):
        img.execute_transforms()
    req = bad_transform(horizontal_flip=True)
    req.image.blob_key = "notAnImage"                     # content and blob key together
    assert app_error(transform_call, req).application_error == pb.ImagesServiceError.INVALID_BLOB_KEY


def test_serving_url_base(server):
    put_blob(server, "servedKey", encode(halves(), "PNG"))
    # cz-apiserver alone knows no host name: the URL is relative to the app.
    assert images.get_serving_url("servedKey") == "/_ah/img/servedKey"
    assert images.get_serving_url("servedKey", size=32, crop=True) == "/_ah/img/servedKey=s32-c"
    images.delete_serving_url("servedKey")
    images.delete_serving_url("servedKey")                # twice is fine
    with pytest.raises(images.ObjectNotFoundError):
        images.get_serving_url("missingKey")
    with pytest.raises(images.InvalidBlobKeyError):
        images.delete_serving_url("bad key")


# ---- memory ----

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(SANITIZED, reason="absolute memory figures are meaningless under ASan")
def test_memory_stays_bounded(server):
    big = encode(Image.frombytes("RGB", (2000, 1500), os.urandom(2000 * 1500 * 3)), "JPEG", quality=90)

    def work():
        img = images.Image(big)
        img.rotate(90)
        img.resize(800)
        img.im_feeling_lucky()
        img.execute_transforms(output_encoding=images.JPEG)
        images.histogram(big)

    for _ in range(3):
        work()
    before = rss_kb(server.proc.pid)
    for _ in range(15):
        work()
    after = rss_kb(server.proc.pid)
    assert after - before < 40 * 1024, (before, after)


def test_parallel_requests(server):
    """More requests at once than IMG_MAX_ACTIVE: all answered, each right."""
    from concurrent.futures import ThreadPoolExecutor
    src = encode(halves(400, 200), "JPEG")

    from google.appengine.runtime import default_api_stub

    def one(i):
        default_api_stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(True)
        w = 20 + i
        return decode(images.resize(src, w)).size == (w, w // 2)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(16)))
