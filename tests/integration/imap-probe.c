/*
 * imap-probe: drive the imap/ library from the command line and print
 * results as text, for tests/integration/test_imap_client.py.
 *
 *   imap-probe [--host H] [--port P] [--tls implicit|starttls|none]
 *              [--user U] [--password-file F] [--cafile C] [--trace]
 *              COMMAND [ARGS] [-- COMMAND [ARGS]]...
 *
 * Commands run in order on one session:
 *   list | listpat PATTERN    LIST "<delim>" <attrs-hex> <name>
 *   select MBOX | examine MBOX  SELECT uidvalidity= uidnext= exists= highestmodseq= ro=
 *   status MBOX               STATUS messages= uidnext= uidvalidity= highestmodseq=
 *   meta SET CHANGEDSINCE     META uid= size= date= tz= modseq= flags=   then METACOUNT n bytes
 *                             VANISHED lo hi
 *   bodies SET OFF LEN        BODY uid offset size sha256   then BODYCOUNT n bytes
 *   body UID FILE             writes the body to FILE
 *   search                    SEARCH count first last
 *   append MBOX FILE FLAGS    APPENDUID v u (FLAGS "" for none)
 *   store SET +|-|= FLAGS     OK
 *   expunge SET | copy UID DEST | move UID DEST (COPYUID v u)
 *   create MBOX | delete MBOX | rename A B | noop | unselect | caps
 * On failure: "ERROR <kind> code=<code> <reason>" on stdout; a broken session
 * stops with exit 1, a NO/BAD/LOCAL goes on and the exit status is 3.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "imapfs/imap.h"
#include "imapfs/log.h"

static const char *kind_word(enum imap_error_kind k)
{
	static const char *const w[] = { "NONE", "CONNECT", "TLS",  "TIMEOUT", "PROTOCOL",
					  "CLOSED", "AUTH",   "NO", "BAD",     "LOCAL" };

	return (unsigned)k < sizeof(w) / sizeof(w[0]) ? w[k] : "?";
}

static int fail(const struct imap_error *err)
{
	printf("ERROR %s code=%s %s\n", kind_word(err->kind), err->code, err->reason);
	fflush(stdout);
	return 1;
}

static int list_cb(void *ctx, const struct imap_mailbox_info *m)
{
	(void)ctx;
	if (m->delimiter)
		printf("LIST \"%c\" %x %s\n", m->delimiter, m->attrs, m->name);
	else
		printf("LIST NIL %x %s\n", m->attrs, m->name);
	return 0;
}

struct meta_total {
	uint64_t count;
	uint64_t bytes;
};

static int meta_cb(void *ctx, const struct imap_msg_meta *m)
{
	struct meta_total *t = ctx;

	t->count++;
	t->bytes += m->size;
	printf("META uid=%" PRIu32 " size=%" PRIu64 " date=%" PRId64 " tz=%d modseq=%" PRIu64
	       " flags=%s\n",
	       m->uid, m->size, m->internaldate, m->internaldate_tz_minutes, m->modseq,
	       (m->have & IMAP_META_FLAGS) ? m->flags : "-");
	return 0;
}

static int vanished_cb(void *ctx, uint32_t lo, uint32_t hi)
{
	(void)ctx;
	printf("VANISHED %" PRIu32 " %" PRIu32 "\n", lo, hi);
	return 0;
}

struct body_state {
	EVP_MD_CTX *md;
	uint64_t offset;
	uint64_t size;
	uint64_t got;
	uint64_t count;
	uint64_t bytes;
	FILE *out; /* "body" command */
	int active;
};

static int body_begin(void *ctx, uint32_t uid, uint64_t offset, uint64_t size)
{
	struct body_state *b = ctx;

	if (b->active) {
		fprintf(stderr, "imap-probe: begin while a body is open\n");
		return -1;
	}
	b->active = 1;
	b->offset = offset;
	b->size = size;
	b->got = 0;
	return EVP_DigestInit_ex(b->md, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

static int body_data(void *ctx, uint32_t uid, const void *buf, size_t len)
{
	struct body_state *b = ctx;

	if (!b->active)
		return -1;
	b->got += len;
	if (b->out && fwrite(buf, 1, len, b->out) != len)
		return -1;
	return EVP_DigestUpdate(b->md, buf, len) == 1 ? 0 : -1;
}

static int body_end(void *ctx, uint32_t uid)
{
	struct body_state *b = ctx;
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dl = 0;

	if (!b->active || b->got != b->size) {
		fprintf(stderr, "imap-probe: body %" PRIu32 " has %" PRIu64 " of %" PRIu64 " bytes\n",
			uid, b->got, b->size);
		return -1;
	}
	b->active = 0;
	EVP_DigestFinal_ex(b->md, d, &dl);
	printf("BODY %" PRIu32 " %" PRIu64 " %" PRIu64 " ", uid, b->offset, b->size);
	for (unsigned i = 0; i < dl; i++)
		printf("%02x", d[i]);
	printf("\n");
	b->count++;
	b->bytes += b->size;
	return 0;
}

static char *read_file(const char *path, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, len = 0, n;

	if (!f)
		return NULL;
	do {
		if (cap - len < 65536) {
			char *nb = realloc(buf, cap + 65536 + 1);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	*len_out = len;
	return buf;
}

static int need(int argc, int i, int n, const char *cmd)
{
	if (i + n >= argc) {
		fprintf(stderr, "imap-probe: %s needs %d argument(s)\n", cmd, n);
		exit(2);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct imap_params p = { .host = "127.0.0.1", .tls = IMAP_TLS_IMPLICIT };
	struct imap_session *s = NULL;
	struct imap_error err = { 0 };
	char *password = NULL;
	int i = 1, rc = 0, soft = 0;

	log_init("imap-probe", LOG_LEVEL_WARN, false);
	for (; i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2]; i++) {
		const char *o = argv[i];

		if (strcmp(o, "--trace") == 0) {
			p.trace = true;
			log_set_level(LOG_LEVEL_TRACE);
			continue;
		}
		need(argc, i, 1, o);
		const char *v = argv[++i];
		if (strcmp(o, "--host") == 0) {
			p.host = v;
		} else if (strcmp(o, "--port") == 0) {
			p.port = (uint16_t)atoi(v);
		} else if (strcmp(o, "--tls") == 0) {
			p.tls = strcmp(v, "starttls") == 0 ? IMAP_TLS_STARTTLS
				: strcmp(v, "none") == 0   ? IMAP_TLS_NONE
							   : IMAP_TLS_IMPLICIT;
		} else if (strcmp(o, "--user") == 0) {
			p.user = v;
		} else if (strcmp(o, "--password-file") == 0) {
			size_t len;

			password = read_file(v, &len);
			if (!password) {
				fprintf(stderr, "imap-probe: %s: %s\n", v, strerror(errno));
				return 2;
			}
			password[strcspn(password, "\r\n")] = '\0';
			p.password = password;
		} else if (strcmp(o, "--cafile") == 0) {
			p.cafile = v;
		} else if (strcmp(o, "--timeout") == 0) {
			p.io_timeout_ms = atoi(v);
		} else {
			fprintf(stderr, "imap-probe: unknown option %s\n", o);
			return 2;
		}
	}
	if (imap_global_init() < 0)
		return 2;
	if (imap_session_open(&p, &s, &err) < 0) {
		free(password);
		return fail(&err);
	}
	printf("OPEN ok\n");
	fflush(stdout);

	while (i < argc && rc == 0) {
		const char *c = argv[i];
		int r = 0;

		if (strcmp(c, "--") == 0) {
			i++;
			continue;
		}
		if (strcmp(c, "list") == 0) {
			r = imap_list(s, "", "*", list_cb, NULL, &err);
		} else if (strcmp(c, "listpat") == 0) {
			need(argc, i, 1, c);
			r = imap_list(s, "", argv[++i], list_cb, NULL, &err);
		} else if (strcmp(c, "select") == 0 || strcmp(c, "examine") == 0) {
			struct imap_select_info si;

			need(argc, i, 1, c);
			r = imap_select(s, argv[i + 1], c[0] == 'e', &si, &err);
			i++;
			if (r == 0)
				printf("SELECT uidvalidity=%" PRIu32 " uidnext=%" PRIu32
				       " exists=%" PRIu32 " highestmodseq=%" PRIu64
				       " ro=%d permanentflags=%s\n",
				       si.uidvalidity, si.uidnext, si.exists, si.highestmodseq,
				       si.read_only, si.permanent_flags);
		} else if (strcmp(c, "status") == 0) {
			struct imap_status_info st;

			need(argc, i, 1, c);
			r = imap_status(s, argv[++i], &st, &err);
			if (r == 0)
				printf("STATUS messages=%" PRIu32 " uidnext=%" PRIu32
				       " uidvalidity=%" PRIu32 " highestmodseq=%" PRIu64 "\n",
				       st.messages, st.uidnext, st.uidvalidity, st.highestmodseq);
		} else if (strcmp(c, "meta") == 0) {
			struct meta_total t = { 0 };
			uint64_t since = 0;

			need(argc, i, 2, c);
			const char *set = argv[++i];
			since = strtoull(argv[++i], NULL, 10);
			r = imap_uid_fetch_meta(s, set,
						IMAP_META_FLAGS | IMAP_META_SIZE |
							IMAP_META_INTERNALDATE | IMAP_META_MODSEQ,
						since, meta_cb, vanished_cb, &t, &err);
			if (r == 0)
				printf("METACOUNT %" PRIu64 " %" PRIu64 "\n", t.count, t.bytes);
		} else if (strcmp(c, "bodies") == 0 || strcmp(c, "body") == 0) {
			struct imap_body_sink sink = { body_begin, body_data, body_end };
			struct body_state b = { 0 };
			uint64_t off = 0, len = 0;

			need(argc, i, 1, c);
			const char *set = argv[++i];
			if (c[4] == '\0') {
				need(argc, i, 1, c);
				b.out = fopen(argv[++i], "wb");
				if (!b.out) {
					perror(argv[i]);
					return 2;
				}
			} else {
				need(argc, i, 2, c);
				off = strtoull(argv[++i], NULL, 10);
				len = strtoull(argv[++i], NULL, 10);
			}
			b.md = EVP_MD_CTX_new();
			r = imap_uid_fetch_bodies(s, set, off, len, &sink, &b, &err);
			EVP_MD_CTX_free(b.md);
			if (b.out)
				fclose(b.out);
			if (r == 0)
				printf("BODYCOUNT %" PRIu64 " %" PRIu64 "\n", b.count, b.bytes);
		} else if (strcmp(c, "search") == 0) {
			uint32_t *uids;
			size_t n;

			r = imap_uid_search_all(s, &uids, &n, &err);
			if (r == 0) {
				printf("SEARCH %zu %" PRIu32 " %" PRIu32 "\n", n, n ? uids[0] : 0,
				       n ? uids[n - 1] : 0);
				free(uids);
			}
		} else if (strcmp(c, "append") == 0) {
			uint32_t v, u;
			size_t len;
			char *data;

			need(argc, i, 2, c);
			data = read_file(argv[i + 2], &len);
			if (!data) {
				perror(argv[i + 2]);
				return 2;
			}
			need(argc, i, 3, c);
			const char *flags = argv[i + 3][0] ? argv[i + 3] : NULL;
			r = imap_append(s, argv[i + 1], flags, -1, data, len, &v, &u, &err);
			free(data);
			i += 3;
			if (r == 0)
				printf("APPENDUID %" PRIu32 " %" PRIu32 "\n", v, u);
		} else if (strcmp(c, "store") == 0) {
			need(argc, i, 3, c);
			enum imap_store_op op = argv[i + 2][0] == '+'	? IMAP_STORE_ADD
						: argv[i + 2][0] == '-' ? IMAP_STORE_REMOVE
									: IMAP_STORE_REPLACE;
			r = imap_uid_store(s, argv[i + 1], op, argv[i + 3], &err);
			i += 3;
			if (r == 0)
				printf("STORE ok\n");
		} else if (strcmp(c, "expunge") == 0) {
			need(argc, i, 1, c);
			r = imap_uid_expunge(s, argv[++i], &err);
			if (r == 0)
				printf("EXPUNGE ok\n");
		} else if (strcmp(c, "copy") == 0 || strcmp(c, "move") == 0) {
			uint32_t v, u;

			need(argc, i, 2, c);
			uint32_t uid = (uint32_t)strtoul(argv[i + 1], NULL, 10);
			r = c[0] == 'c' ? imap_uid_copy(s, uid, argv[i + 2], &v, &u, &err)
					: imap_uid_move(s, uid, argv[i + 2], &v, &u, &err);
			i += 2;
			if (r == 0)
				printf("COPYUID %" PRIu32 " %" PRIu32 "\n", v, u);
		} else if (strcmp(c, "create") == 0 || strcmp(c, "delete") == 0) {
			need(argc, i, 1, c);
			r = c[0] == 'c' ? imap_create(s, argv[i + 1], &err)
					: imap_delete(s, argv[i + 1], &err);
			i++;
			if (r == 0)
				printf("%s ok\n", c);
		} else if (strcmp(c, "rename") == 0) {
			need(argc, i, 2, c);
			r = imap_rename(s, argv[i + 1], argv[i + 2], &err);
			i += 2;
			if (r == 0)
				printf("rename ok\n");
		} else if (strcmp(c, "noop") == 0) {
			r = imap_noop(s, &err);
			if (r == 0)
				printf("NOOP ok\n");
		} else if (strcmp(c, "unselect") == 0) {
			r = imap_unselect(s, &err);
			if (r == 0)
				printf("UNSELECT ok selected=%s\n",
				       imap_session_selected(s) ? imap_session_selected(s) : "-");
		} else if (strcmp(c, "caps") == 0) {
			static const char *const caps[] = { "UIDPLUS", "MOVE",	"CONDSTORE", "QRESYNC",
							    "LITERAL+", "IDLE", "ESEARCH" };
			printf("CAPS");
			for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++)
				if (imap_session_has_cap(s, caps[k]))
					printf(" %s", caps[k]);
			printf("\n");
		} else {
			fprintf(stderr, "imap-probe: unknown command %s\n", c);
			rc = 2;
			break;
		}
		if (r < 0) {
			rc = fail(&err);
			if (imap_session_is_broken(s))
				break;
			rc = 0; /* NO/BAD/LOCAL: go on, the test reads the ERROR line */
			soft = 1;
		}
		fflush(stdout);
		i++;
	}
	imap_session_close(s);
	free(password);
	return rc ? rc : soft ? 3 : 0;
}
