/*
 * coblk - loadable driver plugins.
 *
 * A plugin is a shared object that exports one entry symbol,
 * coblk_plugin_init (COBLK_PLUGIN_ENTRY), returning a CoblkPlugin table
 * that lists its BlockDriver tables. The library loads plugins
 *   - from the plugin directory, once per process, before the first driver
 *     lookup (open, create, probe, bdrv_find_format, bdrv_driver_names):
 *     coblk_plugin_set_dir(), else $COBLK_PLUGIN_DIR (empty: none), else
 *     the directory set at build time ($libdir/coblk/plugins);
 *   - from an explicit path with coblk_plugin_load() (coblk-img --plugin).
 *
 * The loader rejects, with a message naming the file and the reason: a
 * shared object without the entry symbol, a table built for a newer major
 * API version, a CoblkPlugin or BlockDriver table smaller than the oldest
 * one the library supports or larger than the one it knows, a driver
 * without a name or without bdrv_open / co_preadv, and a driver name (or
 * protocol prefix) that is already registered. An older table (smaller
 * struct_size) is accepted: the fields it lacks count as absent.
 *
 * A plugin takes coblk's functions from the process that loads it: build it
 * with `pkg-config --cflags coblk` as a shared object; linking -lcoblk is
 * not needed. Loaded plugins stay loaded until the process exits.
 */
#ifndef COBLK_PLUGIN_H
#define COBLK_PLUGIN_H

#include <coblk/block-driver.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Plugin API version: a new major is incompatible, a new minor only adds. */
#define COBLK_PLUGIN_API_MAJOR 1
#define COBLK_PLUGIN_API_MINOR 0
#define COBLK_PLUGIN_API_VERSION \
    ((uint32_t)(COBLK_PLUGIN_API_MAJOR) << 16 | (uint32_t)(COBLK_PLUGIN_API_MINOR))

/** The name of the entry symbol (a CoblkPluginInitFn). */
#define COBLK_PLUGIN_ENTRY "coblk_plugin_init"

/** Marks a plugin's entry exported even when it builds with -fvisibility=hidden. */
#if defined(__GNUC__)
#define COBLK_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define COBLK_PLUGIN_EXPORT
#endif

/** What a plugin's entry returns. The table only grows at its end. */
typedef struct CoblkPlugin {
    uint32_t struct_size;   /**< sizeof(CoblkPlugin) the plugin was built with */
    uint32_t api_version;   /**< COBLK_PLUGIN_API_VERSION the plugin was built with */
    const char *name;       /**< short name for messages ("sample") */
    const char *description;    /**< one line, or NULL */
    /** NULL-terminated list of driver tables; each sets its struct_size. */
    const BlockDriver *const *drivers;
} CoblkPlugin;

/**
 * The entry: host_api_version is the loading library's
 * COBLK_PLUGIN_API_VERSION. Returns the plugin's table (static storage) or
 * NULL to decline loading.
 */
typedef const CoblkPlugin *CoblkPluginInitFn(uint32_t host_api_version);

/** What a plugin defines (declared here so its definition has a prototype). */
COBLK_PLUGIN_EXPORT const CoblkPlugin *coblk_plugin_init(uint32_t host_api_version);

/**
 * Loads the plugin at path and registers its drivers. Loading the same
 * file again returns 0 and does nothing. Thread-safe. Returns 0, or -errno
 * with errp naming the file and the reason.
 */
COBLK_API int coblk_plugin_load(const char *path, Error **errp);

/**
 * Loads every "*.so" file of dir, in name order. A bad plugin is reported
 * through coblk_warn() and skipped. Returns the number of plugins loaded or
 * -errno (dir unreadable; a missing dir is not an error and gives 0).
 */
COBLK_API int coblk_plugin_load_dir(const char *dir, Error **errp);

/**
 * Sets the directory loaded before the first driver lookup (NULL: none),
 * overriding $COBLK_PLUGIN_DIR and the built-in default. Returns 0, or
 * -EBUSY once that loading has happened.
 */
COBLK_API int coblk_plugin_set_dir(const char *dir);

/** The built-in default plugin directory ($libdir/coblk/plugins). */
COBLK_API const char *coblk_plugin_default_dir(void);

/** The path of the plugin that registered drv, or NULL for an in-tree driver. */
COBLK_API const char *coblk_plugin_path_of(const BlockDriver *drv);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_PLUGIN_H */
