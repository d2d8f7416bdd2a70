/*
 * Loadable driver plugins (coblk/plugin.h): dlopen a shared object, call
 * its coblk_plugin_init, check the table it returns and register its
 * drivers; and the one-time loading of the plugin directory.
 *
 * Locking: plugin_lock serialises loads (so two threads loading the same
 * file register it once). The list of loaded plugins is append-only and
 * published with release stores, so coblk_plugin_path_of() reads it without
 * the lock (the registry calls it while a load holds plugin_lock).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include <coblk/plugin.h>

/* Limits: a plugin lists at most this many drivers; a directory this many files. */
#define PLUGIN_MAX_DRIVERS 16
#define PLUGIN_DIR_MAX_FILES 256

/* The oldest CoblkPlugin table accepted: through the drivers field. */
#define PLUGIN_MIN_STRUCT_SIZE (offsetof(CoblkPlugin, drivers) + sizeof(void *))

typedef struct LoadedPlugin {
    char *path;
    dev_t dev;
    ino_t ino;
    void *handle;
    const BlockDriver *const *drivers;
    size_t n_drivers;
    struct LoadedPlugin *next;
} LoadedPlugin;

static pthread_mutex_t plugin_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(LoadedPlugin *) loaded_plugins;
static pthread_once_t autoload_once = PTHREAD_ONCE_INIT;
static _Atomic bool autoload_done;
static bool dir_overridden;
static char *dir_override;
/* Set while this thread loads plugins: lookups from a plugin's init must not recurse. */
static _Thread_local bool loading_here;

const char *coblk_plugin_default_dir(void)
{
    return COBLK_PLUGIN_DIR_DEFAULT;
}

const char *coblk_plugin_path_of(const BlockDriver *drv)
{
    for (LoadedPlugin *p = atomic_load_explicit(&loaded_plugins, memory_order_acquire); p;
         p = p->next) {
        for (size_t i = 0; i < p->n_drivers; i++) {
            if (p->drivers[i] == drv) {
                return p->path;
            }
        }
    }
    return NULL;
}

static LoadedPlugin *find_loaded(const struct stat *st, void *handle)
{
    for (LoadedPlugin *p = atomic_load_explicit(&loaded_plugins, memory_order_acquire); p;
         p = p->next) {
        if ((st && p->dev == st->st_dev && p->ino == st->st_ino) ||
            (handle && p->handle == handle)) {
            return p;
        }
    }
    return NULL;
}

/* Checks the CoblkPlugin table and counts its drivers. */
static int check_table(const CoblkPlugin *pl, const char *path, size_t *n, Error **errp)
{
    uint32_t major;

    if (!pl) {
        error_setg(errp, "plugin '%s': " COBLK_PLUGIN_ENTRY " returned NULL "
                   "(the plugin declined to load)", path);
        return -EINVAL;
    }
    if (pl->struct_size < PLUGIN_MIN_STRUCT_SIZE) {
        error_setg(errp, "plugin '%s': plugin table too small (struct_size %u, at least %zu "
                   "needed)", path, pl->struct_size, (size_t)PLUGIN_MIN_STRUCT_SIZE);
        return -EINVAL;
    }
    major = pl->api_version >> 16;
    if (major != COBLK_PLUGIN_API_MAJOR) {
        error_setg(errp, "plugin '%s': built for plugin API %u.%u, this coblk supports %u.x",
                   path, major, pl->api_version & 0xffff, COBLK_PLUGIN_API_MAJOR);
        return -EPROTO;
    }
    if (pl->struct_size > sizeof(CoblkPlugin) &&
        (pl->api_version & 0xffff) <= COBLK_PLUGIN_API_MINOR) {
        error_setg(errp, "plugin '%s': plugin table struct_size %u is larger than API %u.%u's "
                   "%zu", path, pl->struct_size, major, pl->api_version & 0xffff,
                   sizeof(CoblkPlugin));
        return -EINVAL;
    }
    *n = 0;
    while (pl->drivers && *n <= PLUGIN_MAX_DRIVERS && pl->drivers[*n]) {
        (*n)++;
    }
    if (*n == 0 || *n > PLUGIN_MAX_DRIVERS) {
        if (*n) {
            error_setg(errp, "plugin '%s': lists more than %d drivers", path,
                       PLUGIN_MAX_DRIVERS);
        } else {
            error_setg(errp, "plugin '%s': lists no drivers", path);
        }
        return -EINVAL;
    }
    return 0;
}

/* dlopens path and registers its drivers; plugin_lock held. */
static int load_locked(const char *path, Error **errp)
{
    CoblkPluginInitFn *init;
    const CoblkPlugin *pl;
    LoadedPlugin *lp;
    struct stat st;
    char who[4200];
    size_t n = 0;
    void *handle;
    int ret;

    if (stat(path, &st) < 0) {
        ret = -errno;
        error_setg_errno(errp, ret, "plugin '%s'", path);
        return ret;
    }
    if (find_loaded(&st, NULL)) {
        return 0;
    }
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();

        error_setg(errp, "plugin '%s': cannot load: %s", path, why ? why : "unknown error");
        return -ENOEXEC;
    }
    if (find_loaded(NULL, handle)) {
        dlclose(handle);    /* drops the reference this call took */
        return 0;
    }
    *(void **)&init = dlsym(handle, COBLK_PLUGIN_ENTRY);
    if (!init) {
        error_setg(errp, "plugin '%s': no entry symbol " COBLK_PLUGIN_ENTRY
                   " (not a coblk plugin)", path);
        ret = -ENOEXEC;
        goto out_close;
    }
    pl = init(COBLK_PLUGIN_API_VERSION);
    ret = check_table(pl, path, &n, errp);
    if (ret < 0) {
        goto out_close;
    }
    snprintf(who, sizeof(who), "plugin '%s'", path);
    ret = bdrv_register_drivers(pl->drivers, n, who, errp);
    if (ret < 0) {
        goto out_close;
    }
    lp = calloc(1, sizeof(*lp));
    if (lp) {
        lp->path = strdup(path);
        lp->dev = st.st_dev;
        lp->ino = st.st_ino;
        lp->handle = handle;
        lp->drivers = pl->drivers;
        lp->n_drivers = n;
        lp->next = atomic_load_explicit(&loaded_plugins, memory_order_relaxed);
        atomic_store_explicit(&loaded_plugins, lp, memory_order_release);
    }
    return 0;   /* registered: the object stays loaded for the process's lifetime */

out_close:
    dlclose(handle);
    return ret;
}

int coblk_plugin_load(const char *path, Error **errp)
{
    bool outer = !loading_here;
    int ret;

    if (!path || !path[0]) {
        error_setg(errp, "plugin: empty path");
        return -EINVAL;
    }
    pthread_mutex_lock(&plugin_lock);
    loading_here = true;
    ret = load_locked(path, errp);
    loading_here = !outer;
    pthread_mutex_unlock(&plugin_lock);
    return ret;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_so_name(const char *name)
{
    size_t len = strlen(name);

    return name[0] != '.' && len > 3 && strcmp(name + len - 3, ".so") == 0;
}

/* Loads every *.so of dir in name order; bad ones are warned about. */
static int load_dir(const char *dir, Error **errp)
{
    char *names[PLUGIN_DIR_MAX_FILES];
    struct dirent *de;
    size_t n = 0;
    int loaded = 0;
    DIR *d = opendir(dir);

    if (!d) {
        if (errno == ENOENT) {
            return 0;
        }
        error_setg_errno(errp, -errno, "plugin directory '%s'", dir);
        return -errno;
    }
    while ((de = readdir(d)) && n < PLUGIN_DIR_MAX_FILES) {
        if (is_so_name(de->d_name) && asprintf(&names[n], "%s/%s", dir, de->d_name) >= 0) {
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_names);
    for (size_t i = 0; i < n; i++) {
        Error *err = NULL;

        if (coblk_plugin_load(names[i], &err) == 0) {
            loaded++;
        } else {
            coblk_warn("%s", error_get_pretty(err));
            error_free(err);
        }
        free(names[i]);
    }
    return loaded;
}

int coblk_plugin_load_dir(const char *dir, Error **errp)
{
    if (!dir || !dir[0]) {
        error_setg(errp, "plugin directory: empty path");
        return -EINVAL;
    }
    return load_dir(dir, errp);
}

int coblk_plugin_set_dir(const char *dir)
{
    char *copy = dir ? strdup(dir) : NULL;
    int ret = 0;

    if (dir && !copy) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&plugin_lock);
    if (atomic_load(&autoload_done)) {
        ret = -EBUSY;
    } else {
        free(dir_override);
        dir_override = copy;
        dir_overridden = true;
        copy = NULL;
    }
    pthread_mutex_unlock(&plugin_lock);
    free(copy);
    return ret;
}

static void autoload(void)
{
    const char *dir;
    char *copy;
    Error *err = NULL;

    pthread_mutex_lock(&plugin_lock);
    atomic_store(&autoload_done, true);
    dir = dir_overridden ? dir_override : secure_getenv("COBLK_PLUGIN_DIR");
    if (!dir_overridden && !dir) {
        dir = COBLK_PLUGIN_DIR_DEFAULT;
    }
    copy = dir && dir[0] ? strdup(dir) : NULL;
    pthread_mutex_unlock(&plugin_lock);
    if (copy && load_dir(copy, &err) < 0) {
        coblk_warn("%s", error_get_pretty(err));
        error_free(err);
    }
    free(copy);
}

void bdrv_plugins_autoload(void)
{
    if (loading_here) {
        return;
    }
    loading_here = true;
    pthread_once(&autoload_once, autoload);
    loading_here = false;
}
