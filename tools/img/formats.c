/*
 * coblk-img formats: the registered drivers with their kind, file
 * extensions, capabilities (BDRV_CAP_*) and, for plugin drivers, the
 * shared object that provided them.
 */
#include <stdio.h>
#include <string.h>

#include <coblk/image.h>
#include <coblk/plugin.h>

#include "img.h"

static void print_caps(unsigned caps, bool json)
{
    bool first = true;

    for (unsigned bit = 1u << 3; bit; bit <<= 1) {
        const char *n = bdrv_capability_name(bit);

        if (n && (caps & bit)) {
            printf(json ? "%s\"%s\"" : "%s%s", first ? "" : json ? ", " : ",", n);
            first = false;
        }
    }
}

static void print_one(const char *name, bool json, bool last)
{
    unsigned caps = bdrv_driver_capabilities(name);
    const char *const *ext = bdrv_driver_extensions(name);
    const char *plugin = coblk_plugin_path_of(bdrv_find_format(name));
    const char *kind = caps & BDRV_CAP_FORMAT ? "format" :
                       caps & BDRV_CAP_PROTOCOL ? "protocol" : "filter";

    if (json) {
        printf("    {\"name\": \"%s\", \"kind\": \"%s\", \"extensions\": [", name, kind);
        for (size_t i = 0; ext && ext[i]; i++) {
            printf("%s\"%s\"", i ? ", " : "", ext[i]);
        }
        printf("], \"capabilities\": [");
        print_caps(caps, true);
        printf("]");
        if (plugin) {
            printf(", \"plugin\": \"%s\"", plugin);
        }
        printf("}%s\n", last ? "" : ",");
        return;
    }
    char exts[128] = "-";
    size_t n = 0;

    for (size_t i = 0; ext && ext[i] && n < sizeof(exts); i++) {
        n += (size_t)snprintf(exts + n, sizeof(exts) - n, "%s.%s", i ? "," : "", ext[i]);
    }
    printf("%-12s %-8s %-10s ", name, kind, exts);
    print_caps(caps, false);
    if (plugin) {
        printf(" plugin=%s", plugin);
    }
    printf("\n");
}

int img_formats(int argc, char **argv)
{
    const char *names[IMG_MAX_DRIVERS];
    bool json = false;

    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--output=", 9) == 0 || strcmp(argv[i], "--output") == 0) {
            const char *v = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : "");
            int o = img_parse_output(v);

            if (o < 0) {
                return 1;
            }
            json = o == 1;
        } else {
            return img_usage_error("formats", "Unexpected argument: %s", argv[i]);
        }
    }
    bdrv_driver_names(names, IMG_MAX_DRIVERS);
    if (json) {
        printf("[\n");
    } else {
        printf("%-12s %-8s %s %s\n", "name", "kind", "extensions", "capabilities");
    }
    for (size_t i = 0; names[i]; i++) {
        print_one(names[i], json, !names[i + 1]);
    }
    if (json) {
        printf("]\n");
    }
    return 0;
}
