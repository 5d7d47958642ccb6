/* SQLite on writable files: `sqlite create DB` makes a small database (run on the
 * host, the result is packaged); `sqlite update DB [COPY]` opens it read-write (in
 * the guest: the packaged file, copied up), inserts rows in a transaction (its
 * rollback journal lives beside it), queries, and with COPY also writes a second
 * database there (in /tmp) with VACUUM INTO. Prints only query results. Linked
 * statically with Debian's libsqlite3.a. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sqlite3 *db;

static void must(int rc, const char *what) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        printf("FAIL %s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

static void exec(const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        printf("FAIL %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static int print_row(void *unused, int n, char **values, char **names) {
    (void)unused;
    (void)names;
    for (int i = 0; i < n; i++)
        printf("%s%s", i ? "|" : "", values[i] ? values[i] : "NULL");
    printf("\n");
    return 0;
}

static void query(const char *sql) {
    char *err = NULL;
    printf("> %s\n", sql);
    if (sqlite3_exec(db, sql, print_row, NULL, &err) != SQLITE_OK) {
        printf("FAIL %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sqlite create|update DB [COPY]\n");
        return 2;
    }
    int create = !strcmp(argv[1], "create");
    must(sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0),
                         NULL),
         "open");
    if (create) {
        exec("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)");
        exec("CREATE INDEX items_name ON items(name)");
        exec("BEGIN");
        for (int i = 1; i <= 500; i++) {
            char sql[128];
            snprintf(sql, sizeof sql, "INSERT INTO items(name, qty) VALUES('item-%03d', %d)", i,
                     (i * 37) % 101);
            exec(sql);
        }
        exec("COMMIT");
        sqlite3_close(db);
        return 0;
    }
    query("SELECT count(*), sum(qty) FROM items");
    exec("BEGIN");
    for (int i = 1; i <= 2000; i++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "INSERT INTO items(name, qty) VALUES('new-%04d-%s', %d)", i,
                 "padding-padding-padding-padding-padding", (i * 13) % 97);
        exec(sql);
    }
    exec("COMMIT");
    exec("UPDATE items SET qty = qty + 1 WHERE id % 7 = 0");
    exec("DELETE FROM items WHERE id % 11 = 0");
    query("SELECT count(*), sum(qty), min(name), max(name) FROM items");
    query("SELECT name, qty FROM items WHERE name LIKE 'item-1%' ORDER BY qty DESC, name LIMIT 5");
    query("PRAGMA integrity_check");
    if (argc > 3) {
        char sql[512];
        snprintf(sql, sizeof sql, "VACUUM INTO '%s'", argv[3]);
        exec(sql);
        sqlite3_close(db);
        must(sqlite3_open_v2(argv[3], &db, SQLITE_OPEN_READWRITE, NULL), "open copy");
        exec("INSERT INTO items(name, qty) VALUES('in-the-copy', 1)");
        query("SELECT count(*), sum(qty) FROM items");
    }
    sqlite3_close(db);
    /* The original again: what was committed is there. */
    must(sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READONLY, NULL), "reopen");
    query("SELECT count(*) FROM items");
    sqlite3_close(db);
    return 0;
}
