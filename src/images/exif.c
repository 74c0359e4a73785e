/* exif.c - EXIF metadata as JSON fields, with libexif.
 *
 * The raw EXIF block is parsed with libexif, without its "follow the
 * specification" option (which would invent mandatory fields). Every entry
 * of IFD0, the EXIF IFD and the GPS IFD whose tag libexif can name becomes a
 * field named as in the EXIF specification (Make, Model, Orientation,
 * DateTimeOriginal, ISOSpeedRatings, GPSLatitude, ...):
 *   - text (ASCII) as a string (fields that are not valid UTF-8 are left out);
 *   - integers as a number, rationals as a float, a list when the entry
 *     holds several values (entries over 64 values are left out);
 *   - raw bytes (UNDEFINED: maker notes, versions) are left out.
 * As App Engine does: DateTimeOriginal becomes seconds since the epoch (the
 * EXIF time read as UTC), and GPSLatitude / GPSLongitude become signed
 * decimal degrees (south and west negative), GPSAltitude negative below sea
 * level. */
#include "images/exif.h"

#include <libexif/exif-data.h>
#include <libexif/exif-utils.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_COMPONENTS 64

static double rational(const unsigned char *p, ExifFormat f, ExifByteOrder o, int *ok)
{
    if (f == EXIF_FORMAT_RATIONAL) {
        ExifRational r = exif_get_rational(p, o);
        *ok = r.denominator != 0;
        return *ok ? (double)r.numerator / r.denominator : 0;
    }
    ExifSRational r = exif_get_srational(p, o);
    *ok = r.denominator != 0;
    return *ok ? (double)r.numerator / r.denominator : 0;
}

static json_t *one_value(const ExifEntry *e, unsigned i, ExifByteOrder o)
{
    const unsigned char *p = e->data + (size_t)i * exif_format_get_size(e->format);
    int ok = 1;
    switch (e->format) {
    case EXIF_FORMAT_BYTE: return json_integer(p[0]);
    case EXIF_FORMAT_SBYTE: return json_integer((signed char)p[0]);
    case EXIF_FORMAT_SHORT: return json_integer(exif_get_short(p, o));
    case EXIF_FORMAT_SSHORT: return json_integer(exif_get_sshort(p, o));
    case EXIF_FORMAT_LONG: return json_integer(exif_get_long(p, o));
    case EXIF_FORMAT_SLONG: return json_integer(exif_get_slong(p, o));
    case EXIF_FORMAT_RATIONAL:
    case EXIF_FORMAT_SRATIONAL: {
        double d = rational(p, e->format, o, &ok);
        return ok ? json_real(d) : NULL;
    }
    default: return NULL;
    }
}

static json_t *entry_value(const ExifEntry *e, ExifByteOrder o)
{
    if (!e->data) return NULL;
    if (e->format == EXIF_FORMAT_ASCII) {
        size_t n = e->size;
        while (n && e->data[n - 1] == 0) n--;
        return json_stringn((const char *)e->data, n);   /* NULL unless UTF-8 */
    }
    unsigned sz = exif_format_get_size(e->format);
    if (!sz || !e->components || e->components > MAX_COMPONENTS ||
        (size_t)e->components * sz > e->size) return NULL;
    if (e->components == 1) return one_value(e, 0, o);
    json_t *a = json_array();
    for (unsigned i = 0; i < e->components; i++) {
        json_t *v = one_value(e, i, o);
        if (!v) { json_decref(a); return NULL; }
        json_array_append_new(a, v);
    }
    return a;
}

/* "YYYY:MM:DD HH:MM[:SS]" as seconds since the epoch, or -1. */
static long long exif_time(const char *s)
{
    int Y, M, D, h, m, sec = 0;
    if (sscanf(s, "%4d:%2d:%2d %2d:%2d:%2d", &Y, &M, &D, &h, &m, &sec) < 5) return -1;
    if (Y < 1 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 ||
        h < 0 || m < 0 || sec < 0) return -1;
    struct tm tm = { .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
                     .tm_hour = h, .tm_min = m, .tm_sec = sec };
    return (long long)timegm(&tm);
}

/* Degrees, minutes, seconds as signed decimal degrees. */
static void gps_coordinate(json_t *obj, const char *name, const char *ref_name, const char *neg)
{
    json_t *v = json_object_get(obj, name), *ref = json_object_get(obj, ref_name);
    if (!json_is_array(v) || json_array_size(v) != 3) { json_object_del(obj, name); return; }
    double d = 0, div = 1;
    for (size_t i = 0; i < 3; i++, div *= 60) {
        json_t *x = json_array_get(v, i);
        if (!json_is_number(x)) { json_object_del(obj, name); return; }
        d += json_number_value(x) / div;
    }
    if (json_is_string(ref) && !strcmp(json_string_value(ref), neg)) d = -d;
    json_object_set_new(obj, name, json_real(d));
}

void exif_to_json(const uint8_t *data, size_t len, json_t *obj)
{
    static const unsigned char prefix[6] = { 'E', 'x', 'i', 'f', 0, 0 };
    if (!data || len < 8) return;
    unsigned char *copy = NULL;
    if (memcmp(data, prefix, 6)) {       /* a bare TIFF block (PNG eXIf, WebP) */
        copy = malloc(len + 6);
        if (!copy) return;
        memcpy(copy, prefix, 6);
        memcpy(copy + 6, data, len);
        data = copy;
        len += 6;
    }
    ExifData *ed = exif_data_new();
    if (!ed) { free(copy); return; }
    exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
    exif_data_load_data(ed, data, (unsigned)len);
    ExifByteOrder o = exif_data_get_byte_order(ed);
    static const ExifIfd ifds[] = { EXIF_IFD_0, EXIF_IFD_EXIF, EXIF_IFD_GPS };
    for (size_t k = 0; k < sizeof ifds / sizeof ifds[0]; k++) {
        ExifContent *c = ed->ifd[ifds[k]];
        for (unsigned i = 0; c && i < c->count; i++) {
            const ExifEntry *e = c->entries[i];
            const char *name = exif_tag_get_name_in_ifd(e->tag, ifds[k]);
            if (!name || !*name) continue;
            json_t *v = entry_value(e, o);
            if (v) json_object_set_new(obj, name, v);
        }
    }
    exif_data_unref(ed);
    free(copy);

    json_t *dto = json_object_get(obj, "DateTimeOriginal");
    if (dto) {
        long long t = json_is_string(dto) ? exif_time(json_string_value(dto)) : -1;
        if (t >= 0) json_object_set_new(obj, "DateTimeOriginal", json_integer(t));
        else json_object_del(obj, "DateTimeOriginal");
    }
    if (json_object_get(obj, "GPSLatitude")) gps_coordinate(obj, "GPSLatitude", "GPSLatitudeRef", "S");
    if (json_object_get(obj, "GPSLongitude")) gps_coordinate(obj, "GPSLongitude", "GPSLongitudeRef", "W");
    json_t *alt = json_object_get(obj, "GPSAltitude"), *aref = json_object_get(obj, "GPSAltitudeRef");
    if (json_is_number(alt) && json_is_integer(aref) && json_integer_value(aref) == 1)
        json_object_set_new(obj, "GPSAltitude", json_real(-json_number_value(alt)));
}
