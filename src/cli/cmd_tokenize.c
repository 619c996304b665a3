/* cmd_tokenize.c: `spruce tokenize (MODEL_DIR | tokenizer.json) [FILE | --text S]`:
 * text to ids (or, with --decode, ids to text) with a model's tokenizer.json. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli.h"
#include "spruce_clock.h"
#include "spruce_tokenizer.h"
#include "spruce_tokens.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spruce tokenize (MODEL_DIR | tokenizer.json) [FILE | --text S] [options]\n\n"
            "Encode text with a Hugging Face tokenizer.json as the tokenizers library does (the\n"
            "same ids), or decode ids back to text.  The whole input is one text: FILE, --text S,\n"
            "or standard input when neither is given.  By default the ids are printed on one\n"
            "line, separated by spaces, without special tokens.\n\n"
            "options:\n"
            "  --text S        the text (with --decode: the ids) on the command line\n"
            "  --add-special   add the special tokens of the tokenizer's post-processor\n"
            "                  (e.g. Mistral's <s>; Qwen3's and Llama 3's add none)\n"
            "  --decode        read ids instead (whitespace-separated numbers, or a .u16/.u32\n"
            "                  token file) and print their text\n"
            "  --skip-special  with --decode: leave out special tokens\n"
            "  --json          print one JSON object: {\"ids\": [...], \"tokens\": [...], \"count\": N}\n"
            "                  (with --decode: {\"text\": \"...\"})\n"
            "  --out FILE      write the ids to a token file (.u32, .u16 or .txt by extension)\n"
            "                  instead of printing them; written as FILE.tmp-<pid>, then renamed\n"
            "spruce --verbose tokenize ... also says how long loading and encoding took.\n\n"
            "Text that is not valid UTF-8, an id the tokenizer does not have, and a tokenizer.json\n"
            "with a component spruce does not implement are errors naming the offset, the id or\n"
            "the component (doc/tokenizer.md lists what is supported); the exit status is then 1\n"
            "(2 for a wrong command line).\n\n"
            "examples:\n"
            "  spruce tokenize models/qwen3 --text \"Hello world\"\n"
            "  spruce tokenize models/mistral wiki.txt --add-special --out wiki.u32\n"
            "  spruce tokenize models/qwen3 --decode --text \"9707 1879\"\n");
}

/* The whole of path ("-" or NULL: standard input) into a malloc'ed buffer. */
static int read_all(const char *path, char **buf, size_t *len)
{
    FILE *f = path ? fopen(path, "rb") : stdin;
    size_t cap = 1 << 16, n = 0, k;
    char *b;
    if (!f) {
        cli_fail("tokenize: %s: %s", path, strerror(errno));
        return -1;
    }
    if (!(b = malloc(cap))) {
        cli_fail("tokenize: out of memory");
        goto fail;
    }
    while ((k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *p = realloc(b, cap *= 2);
            if (!p) {
                cli_fail("tokenize: %s: out of memory after %zu bytes", path ? path : "stdin", n);
                goto fail;
            }
            b = p;
        }
    }
    if (ferror(f)) {
        cli_fail("tokenize: %s: read error: %s", path ? path : "stdin", strerror(errno));
        goto fail;
    }
    if (path)
        fclose(f);
    *buf = b;
    *len = n;
    return 0;
fail:
    free(b);
    if (path)
        fclose(f);
    return -1;
}

/* Whitespace-separated decimal ids of s[0..n). */
static int parse_ids(const char *what, const char *s, size_t n, uint32_t **ids, size_t *nids)
{
    size_t i = 0, k = 0, cap = 64, word = 0;
    uint32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        cli_fail("tokenize: out of memory");
        return -1;
    }
    while (i < n) {
        uint64_t x = 0;
        size_t start;
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == ',') {
            i++;
            continue;
        }
        start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && x <= UINT32_MAX)
            x = x * 10 + (uint64_t)(s[i++] - '0');
        word++;
        if (i == start || x > UINT32_MAX ||
            (i < n && !(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == ','))) {
            size_t e = start;
            while (e < n && e < start + 20 && s[e] != ' ' && s[e] != '\n')
                e++;
            cli_fail("tokenize --decode: %s: word %zu ('%.*s') is not an id (a number below 2^32)",
                     what, word, (int)(e - start), s + start);
            free(v);
            return -1;
        }
        if (k == cap) {
            uint32_t *p = realloc(v, (cap *= 2) * sizeof *p);
            if (!p) {
                free(v);
                cli_fail("tokenize: out of memory");
                return -1;
            }
            v = p;
        }
        v[k++] = (uint32_t)x;
    }
    *ids = v;
    *nids = k;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int print_ids(const spruce_tokenizer *tok, const uint32_t *ids, size_t n, int json)
{
    size_t i;
    if (json) {
        json_t *o = json_object(), *a = json_array(), *t = json_array();
        int rc;
        for (i = 0; i < n; i++) {
            const char *s = spruce_tokenizer_token(tok, ids[i]);
            json_array_append_new(a, json_integer(ids[i]));
            json_array_append_new(t, s ? json_string(s) : json_null());
        }
        json_object_set_new(o, "ids", a);
        json_object_set_new(o, "tokens", t);
        json_object_set_new(o, "count", json_integer((json_int_t)n));
        rc = json_dumpf(o, stdout, JSON_PRESERVE_ORDER | JSON_COMPACT);
        json_decref(o);
        if (rc < 0)
            return -1;
        putchar('\n');
        return 0;
    }
    for (i = 0; i < n; i++)
        printf(i ? " %u" : "%u", ids[i]);
    putchar('\n');
    return 0;
}

int spruce_cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"text", required_argument, NULL, 't'},
        {"add-special", no_argument, NULL, 'a'},
        {"decode", no_argument, NULL, 'd'},
        {"skip-special", no_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *text = NULL, *out = NULL, *file = NULL, *tpath;
    int add_special = 0, decode = 0, skip = 0, json = 0, c, rc, status = 1;
    spruce_tokenizer *tok = NULL;
    char *buf = NULL, *dec = NULL;
    size_t len = 0, n = 0, dlen;
    uint32_t *ids = NULL;
    double t0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't': text = optarg; break;
        case 'a': add_special = 1; break;
        case 'd': decode = 1; break;
        case 's': skip = 1; break;
        case 'j': json = 1; break;
        case 'o': out = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc || argc - optind > 2) {
        cli_fail("tokenize: expected MODEL_DIR or tokenizer.json, then at most one FILE (try "
                 "'spruce tokenize --help')");
        return 2;
    }
    tpath = argv[optind];
    if (argc - optind == 2)
        file = argv[optind + 1];
    if (file && text) {
        cli_fail("tokenize: give FILE or --text, not both");
        return 2;
    }
    if (decode && (out || add_special)) {
        cli_fail("tokenize: --decode takes neither --out nor --add-special");
        return 2;
    }
    if (skip && !decode) {
        cli_fail("tokenize: --skip-special goes with --decode");
        return 2;
    }
    t0 = spruce_clock_now();
    if ((rc = spruce_tokenizer_load(tpath, &tok))) {
        cli_error(rc, "tokenize: loading the tokenizer");
        return 1;
    }
    if (cli_verbose)
        fprintf(stderr, "spruce tokenize: loaded %s (%u tokens) in %.3f s\n", tpath,
                spruce_tokenizer_vocab_size(tok), spruce_clock_now() - t0);
    if (decode) {
        if (file && (ends_with(file, ".u16") || ends_with(file, ".u32"))) {
            if ((rc = spruce_tokens_load(file, &ids, &n))) {
                cli_error(rc, "tokenize --decode: reading ids");
                goto done;
            }
        } else if (text ? parse_ids("--text", text, strlen(text), &ids, &n)
                        : (read_all(file, &buf, &len) ||
                           parse_ids(file ? file : "stdin", buf, len, &ids, &n)))
            goto done;
        if ((rc = spruce_tokenizer_decode(tok, ids, n, skip, &dec, &dlen))) {
            cli_error(rc, "tokenize --decode");
            goto done;
        }
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "text", json_stringn(dec, dlen));
            rc = json_dumpf(o, stdout, JSON_PRESERVE_ORDER | JSON_COMPACT);
            json_decref(o);
            if (rc < 0) {
                cli_fail("tokenize: the decoded text could not be written as JSON");
                goto done;
            }
            putchar('\n');
        } else {
            fwrite(dec, 1, dlen, stdout);
            putchar('\n');
        }
        status = 0;
        goto done;
    }
    t0 = spruce_clock_now();
    if (file && !text) { /* mapped, not read: a large file costs no memory beyond its ids */
        struct stat st;
        len = stat(file, &st) == 0 ? (size_t)st.st_size : 0;
        rc = spruce_tokenizer_encode_file(tok, file, add_special, NULL, NULL, &ids, &n);
    } else {
        if (text)
            len = strlen(text);
        else if (read_all(file, &buf, &len))
            goto done;
        rc = spruce_tokenizer_encode(tok, text ? text : buf, len, add_special, &ids, &n);
    }
    if (rc) {
        cli_error(rc, "tokenize: %s", text ? "--text" : file ? file : "stdin");
        goto done;
    }
    if (cli_verbose) {
        double dt = spruce_clock_now() - t0;
        fprintf(stderr, "spruce tokenize: encoded %zu bytes into %zu ids in %.3f s (%.3f M ids/s, one thread)\n",
                len, n, dt, dt > 0 ? (double)n / dt / 1e6 : 0.0);
    }
    if (out) {
        if (n == 0) {
            cli_fail("tokenize: %s: the text gives no ids: nothing to write", out);
            goto done;
        }
        if ((rc = spruce_tokens_save(out, ids, n))) {
            cli_error(rc, "tokenize: writing %s", out);
            goto done;
        }
        fprintf(stderr, "spruce tokenize: wrote %zu ids to %s\n", n, out);
    } else if (print_ids(tok, ids, n, json)) {
        cli_fail("tokenize: writing the ids failed");
        goto done;
    }
    status = 0;
done:
    if (fflush(stdout) != 0 && status == 0) {
        cli_fail("tokenize: writing to standard output failed");
        status = 1;
    }
    free(buf);
    free(ids);
    free(dec);
    spruce_tokenizer_free(tok);
    return status;
}
