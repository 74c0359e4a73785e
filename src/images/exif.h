/* exif.h - EXIF metadata of a source image as JSON fields, for the images
 * service's source_metadata (parse_source_metadata in the SDK). */
#ifndef CZ_IMAGES_EXIF_H
#define CZ_IMAGES_EXIF_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* Add the EXIF fields found in data (raw EXIF, with or without the
 * "Exif\0\0" prefix) to obj; malformed or empty data adds nothing. */
void exif_to_json(const uint8_t *data, size_t len, json_t *obj);

#endif
