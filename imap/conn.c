/*
 * TCP + OpenSSL byte stream for one session. The socket is non-blocking
 * from the start; every wait (connect, handshake, read, write) is a poll()
 * bounded by the timeout, so no call blocks forever.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conn_i.h"
#include "imap_i.h"

struct imap_conn {
	int fd;
	int timeout_ms;
	SSL_CTX *ctx;
	SSL *ssl;
	bool tls_up; /* handshake done: close_notify makes sense */
};

static int64_t conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd: 1 ready, 0 timed out, -1 error (errno). */
static int conn_wait(int fd, short events, int timeout_ms)
{
	int64_t deadline = conn_now_ms() + timeout_ms;
	struct pollfd pfd = { .fd = fd, .events = events };

	for (;;) {
		int64_t left = deadline - conn_now_ms();
		int r;

		if (left < 0)
			left = 0;
		r = poll(&pfd, 1, (int)left);
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

static int conn_set_socket_options(int fd)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	/* Commands are written whole; no delayed-ACK stall on small writes.
	 * Fails harmlessly on a socketpair (tests). */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

struct imap_conn *imap_conn_from_fd(int fd, int timeout_ms)
{
	struct imap_conn *c = calloc(1, sizeof(*c));

	if (!c || conn_set_socket_options(fd) < 0) {
		free(c);
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : IMAP_DEFAULT_TIMEOUT_MS;
	return c;
}

static int conn_connect_one(const struct addrinfo *ai, int timeout_ms, int *fd_out)
{
	socklen_t sl = sizeof(int);
	int fd, r, soerr = 0;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		goto out_ok;
	if (errno != EINPROGRESS) {
		r = -errno;
		goto out_close;
	}
	r = conn_wait(fd, POLLOUT, timeout_ms);
	if (r <= 0) {
		r = r == 0 ? -ETIMEDOUT : -errno;
		goto out_close;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
		r = -errno;
		goto out_close;
	}
	if (soerr) {
		r = -soerr;
		goto out_close;
	}
out_ok:
	*fd_out = fd;
	return 0;
out_close:
	close(fd);
	return r;
}

int imap_conn_connect(const char *host, uint16_t port, int timeout_ms, struct imap_conn **out,
		      struct imap_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL, *ai;
	char portstr[8];
	int r, fd = -1, last = -ECONNREFUSED;

	*out = NULL;
	if (timeout_ms <= 0)
		timeout_ms = IMAP_DEFAULT_TIMEOUT_MS;
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0) {
		imap_error_set(err, IMAP_ERR_CONNECT, NULL, "cannot resolve %s: %s", host,
			       gai_strerror(r));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		last = conn_connect_one(ai, timeout_ms, &fd);
		if (last == 0)
			break;
	}
	freeaddrinfo(res);
	if (last != 0) {
		imap_error_set(err, last == -ETIMEDOUT ? IMAP_ERR_TIMEOUT : IMAP_ERR_CONNECT, NULL,
			       "connect to %s port %u: %s", host, (unsigned)port, strerror(-last));
		return -1;
	}
	*out = imap_conn_from_fd(fd, timeout_ms);
	if (!*out) {
		imap_error_set(err, IMAP_ERR_LOCAL, NULL, "out of memory");
		return -1;
	}
	return 0;
}

bool imap_conn_is_tls(const struct imap_conn *c)
{
	return c->ssl != NULL;
}

static void conn_ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
	ERR_clear_error();
}

/* After an SSL call returned r <= 0: wait as OpenSSL asks. Returns 1 to
 * retry, 0 on clean EOF, -1 on error (*err filled). */
static int conn_ssl_retry(struct imap_conn *c, int r, const char *what, struct imap_error *err)
{
	int e = SSL_get_error(c->ssl, r);
	char reason[200];
	int w;

	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		w = conn_wait(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, c->timeout_ms);
		if (w > 0)
			return 1;
		if (w == 0)
			imap_error_set(err, IMAP_ERR_TIMEOUT, NULL, "%s: no answer within %d ms",
				       what, c->timeout_ms);
		else
			imap_error_set(err, IMAP_ERR_CLOSED, NULL, "%s: %s", what,
				       strerror(errno));
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (errno == 0 || r == 0)
				return 0;
			imap_error_set(err, IMAP_ERR_CLOSED, NULL, "%s: %s", what,
				       strerror(errno));
			return -1;
		}
		/* fall through */
	default:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
		if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			ERR_clear_error();
			return 0;
		}
#endif
		conn_ssl_reason(reason, sizeof(reason));
		imap_error_set(err, IMAP_ERR_TLS, NULL, "%s: %s", what, reason);
		return -1;
	}
}

/*
 * One client SSL_CTX per process, shared by every connection (reference
 * counted): loading the system's trust store parses some 150 certificates,
 * 25-40 ms of CPU here, and a mount opens five connections at once while
 * its first listing runs. Rebuilt when the CA file asked for is another
 * one, or the same path changed on disk.
 */
struct conn_ctx_key {
	char *cafile;            /* NULL: the system store only */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

static pthread_mutex_t conn_ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *conn_ctx_cached;
static struct conn_ctx_key conn_ctx_cached_key;

static bool conn_ctx_key_same(const struct conn_ctx_key *a, const struct conn_ctx_key *b)
{
	if (!a->cafile || !b->cafile)
		return !a->cafile && !b->cafile;
	return strcmp(a->cafile, b->cafile) == 0 && a->dev == b->dev && a->ino == b->ino &&
	       a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* A new context: TLS 1.2 or later, peers verified against the system store
 * and cafile. NULL with err set. */
static SSL_CTX *conn_ctx_new(const char *cafile, struct imap_error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char reason[200];

	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		conn_ssl_reason(reason, sizeof(reason));
		imap_error_set(err, IMAP_ERR_TLS, NULL, "TLS setup failed: %s", reason);
		SSL_CTX_free(ctx);
		return NULL;
	}
	(void)SSL_CTX_set_default_verify_paths(ctx);
	if (cafile && SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
		conn_ssl_reason(reason, sizeof(reason));
		imap_error_set(err, IMAP_ERR_TLS, NULL, "cannot load CA file %s: %s", cafile,
			       reason);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/* The shared context for cafile, with a reference for the caller. */
static SSL_CTX *conn_ctx_get(const char *cafile, struct imap_error *err)
{
	struct conn_ctx_key key = { 0 };
	struct stat st;
	SSL_CTX *ctx;

	if (cafile) {
		if (stat(cafile, &st) == 0) {
			key.dev = st.st_dev;
			key.ino = st.st_ino;
			key.size = st.st_size;
			key.mtime = st.st_mtim;
		}
		key.cafile = (char *)cafile;
	}
	pthread_mutex_lock(&conn_ctx_lock);
	if (conn_ctx_cached && conn_ctx_key_same(&conn_ctx_cached_key, &key)) {
		ctx = conn_ctx_cached;
		SSL_CTX_up_ref(ctx);
		pthread_mutex_unlock(&conn_ctx_lock);
		return ctx;
	}
	ctx = conn_ctx_new(cafile, err);
	if (ctx) {
		char *copy = cafile ? strdup(cafile) : NULL;

		if (!cafile || copy) {
			SSL_CTX_free(conn_ctx_cached);
			free(conn_ctx_cached_key.cafile);
			conn_ctx_cached = ctx;
			conn_ctx_cached_key = key;
			conn_ctx_cached_key.cafile = copy;
			SSL_CTX_up_ref(ctx);
		}
	}
	pthread_mutex_unlock(&conn_ctx_lock);
	return ctx;
}

int imap_conn_start_tls(struct imap_conn *c, const char *host, const char *cafile,
			struct imap_error *err)
{
	unsigned char addr[sizeof(struct in6_addr)];
	bool ip_literal;
	char reason[200];
	int r;

	ERR_clear_error();
	c->ctx = conn_ctx_get(cafile, err);
	if (!c->ctx)
		return -1;
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
		goto out_openssl;

	ip_literal = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
	if (ip_literal) {
		/* no SNI for addresses (RFC 6066); check the certificate's IP SAN */
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
			goto out_openssl;
	} else {
		SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set_tlsext_host_name(c->ssl, host) != 1 || SSL_set1_host(c->ssl, host) != 1)
			goto out_openssl;
	}

	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_connect(c->ssl);
		if (r == 1) {
			c->tls_up = true;
			break;
		}
		long vr = SSL_get_verify_result(c->ssl);
		if (vr != X509_V_OK) {
			imap_error_set(err, IMAP_ERR_TLS, NULL, "certificate check failed for %s: %s",
				       host, X509_verify_cert_error_string(vr));
			ERR_clear_error();
			return -1;
		}
		r = conn_ssl_retry(c, r, "TLS handshake", err);
		if (r == 0) {
			imap_error_set(err, IMAP_ERR_TLS, NULL,
				       "TLS handshake: connection closed by the server");
			return -1;
		}
		if (r < 0) {
			if (err && err->kind == IMAP_ERR_CLOSED)
				err->kind = IMAP_ERR_TLS;
			return -1;
		}
	}
	return 0;

out_openssl:
	conn_ssl_reason(reason, sizeof(reason));
	imap_error_set(err, IMAP_ERR_TLS, NULL, "TLS setup failed: %s", reason);
	return -1;
}

ssize_t imap_conn_read(struct imap_conn *c, void *buf, size_t len, struct imap_error *err)
{
	int r;

	if (len > INT32_MAX)
		len = INT32_MAX;
	for (;;) {
		if (c->ssl) {
			ERR_clear_error();
			errno = 0;
			r = SSL_read(c->ssl, buf, (int)len);
			if (r > 0)
				return r;
			r = conn_ssl_retry(c, r, "read", err);
			if (r <= 0)
				return r;
			continue;
		}
		ssize_t n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			imap_error_set(err, IMAP_ERR_CLOSED, NULL, "read: %s", strerror(errno));
			return -1;
		}
		r = conn_wait(c->fd, POLLIN, c->timeout_ms);
		if (r == 0) {
			imap_error_set(err, IMAP_ERR_TIMEOUT, NULL,
				       "the server did not answer within %d ms", c->timeout_ms);
			return -1;
		}
		if (r < 0) {
			imap_error_set(err, IMAP_ERR_CLOSED, NULL, "read: %s", strerror(errno));
			return -1;
		}
	}
}

int imap_conn_write(struct imap_conn *c, const void *buf, size_t len, struct imap_error *err)
{
	const char *p = buf;
	int r;

	while (len > 0) {
		size_t chunk = len > INT32_MAX ? INT32_MAX : len;

		if (c->ssl) {
			ERR_clear_error();
			errno = 0;
			r = SSL_write(c->ssl, p, (int)chunk);
			if (r > 0) {
				p += r;
				len -= (size_t)r;
				continue;
			}
			r = conn_ssl_retry(c, r, "write", err);
			if (r == 0) {
				imap_error_set(err, IMAP_ERR_CLOSED, NULL,
					       "write: connection closed by the server");
				return -1;
			}
			if (r < 0)
				return -1;
			continue;
		}
		ssize_t n = send(c->fd, p, chunk, MSG_NOSIGNAL);
		if (n >= 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			imap_error_set(err, IMAP_ERR_CLOSED, NULL, "write: %s", strerror(errno));
			return -1;
		}
		r = conn_wait(c->fd, POLLOUT, c->timeout_ms);
		if (r == 0) {
			imap_error_set(err, IMAP_ERR_TIMEOUT, NULL,
				       "write: the server accepted nothing within %d ms",
				       c->timeout_ms);
			return -1;
		}
		if (r < 0) {
			imap_error_set(err, IMAP_ERR_CLOSED, NULL, "write: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}

void imap_conn_close(struct imap_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		ERR_clear_error();
		if (c->tls_up)
			(void)SSL_shutdown(c->ssl); /* one close_notify, no waiting */
		ERR_clear_error();
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}
