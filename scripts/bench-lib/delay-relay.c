// SPDX-License-Identifier: MIT
/*
 * delay-relay: a TCP forwarder that delays every byte by a fixed time in each
 * direction, for scripts/bench (the kernel here has no netem).
 *
 *   delay-relay --listen IP:PORT --connect IP:PORT [--connect-netns PATH]
 *               [--delay-ms D] [--stats FILE] [--max-buffer BYTES]
 *
 * The listening socket is created in the network namespace the relay starts
 * in; with --connect-netns the relay then switches to that namespace, so
 * every outgoing connection is made there. A relay started in the client
 * namespace thus joins two namespaces that have no other route between them:
 * all traffic crosses the delay.
 *
 * Data read from one side is queued with a deadline now + D and written to
 * the other side once the deadline has passed: a one-way delay of D, so a
 * round trip of 2 D, with no bandwidth limit other than --max-buffer bytes in
 * flight per direction (default 64 MiB). With D = 0 data is written straight
 * through.
 *
 * --stats FILE is a file of four little-endian uint64 updated in place
 * (mmap): bytes delivered client->server, server->client, connections
 * accepted, connections open. Read it with `od -An -t u8 FILE`.
 * One line per finished connection goes to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)

struct chunk {
	struct chunk *next;
	uint64_t due_ns;
	size_t len, off;
	char data[];
};

struct dir {
	int src, dst;           /* fds: read from src, write to dst */
	struct chunk *head, *tail;
	size_t queued;
	int eof;                /* src said EOF */
	int shut;               /* dst shut down for writing */
	uint64_t *counter;
	uint64_t bytes;
};

struct conn {
	struct conn *next, *prev;
	int cfd, sfd;
	struct dir d[2];        /* 0: client->server, 1: server->client */
	uint32_t events[2];     /* current epoll interest of cfd, sfd */
	int removed[2];         /* fd taken out of epoll (both its directions done) */
	unsigned id;
	uint64_t start_ns;
	int dead;
};

/* epoll tags: pointer to conn with low bit = which fd (0 client, 1 server) */

static uint64_t delay_ns;
static size_t max_buffer = 64u << 20;
static volatile uint64_t *stats;
static uint64_t dummy_stats[4];
static struct conn *conns;
static int epfd, tfd, lfd;
static unsigned next_id;
static char buf[READ_SIZE];
static volatile sig_atomic_t stop;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void set_nonblock(int fd)
{
	int one = 1;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Recompute the epoll interest of fd (which = 0 client fd, 1 server fd). */
static void conn_update(struct conn *c, int which, uint64_t now)
{
	int fd = which ? c->sfd : c->cfd;
	/* fd is src of d[which] and dst of d[!which] */
	struct dir *in = &c->d[which], *out = &c->d[!which];
	struct epoll_event ev = { 0 };

	if (c->removed[which])
		return;
	if (in->eof && out->shut) {
		/* nothing more to read or write here; EPOLLHUP would spin */
		epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
		c->removed[which] = 1;
		return;
	}
	if (!in->eof && in->queued < max_buffer)
		ev.events |= EPOLLIN;
	if (out->head && out->head->due_ns <= now)
		ev.events |= EPOLLOUT;
	if (ev.events == c->events[which])
		return;
	c->events[which] = ev.events;
	ev.data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)which;
	epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

static void conn_close(struct conn *c)
{
	double secs = (double)(now_ns() - c->start_ns) / 1e9;

	fprintf(stderr, "delay-relay: conn %u closed after %.3f s: c2s=%llu s2c=%llu\n", c->id,
		secs, (unsigned long long)c->d[0].bytes, (unsigned long long)c->d[1].bytes);
	close(c->cfd);
	close(c->sfd);
	for (int i = 0; i < 2; i++) {
		struct chunk *ch = c->d[i].head;

		while (ch) {
			struct chunk *n = ch->next;

			free(ch);
			ch = n;
		}
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	stats[3]--;
	free(c);
}

/* Write what is due in d; returns -1 on a fatal error. */
static int dir_flush(struct conn *c, struct dir *d, uint64_t now)
{

	while (d->head && d->head->due_ns <= now) {
		struct chunk *ch = d->head;
		ssize_t n = send(d->dst, ch->data + ch->off, ch->len - ch->off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			return -1;
		}
		ch->off += (size_t)n;
		d->queued -= (size_t)n;
		d->bytes += (uint64_t)n;
		*d->counter += (uint64_t)n;
		if (ch->off == ch->len) {
			d->head = ch->next;
			if (!d->head)
				d->tail = NULL;
			free(ch);
		}
	}
	if (!d->head && d->eof && !d->shut) {
		shutdown(d->dst, SHUT_WR);
		d->shut = 1;
	}
	(void)c;
	return 0;
}

/* Read from d->src; returns -1 on a fatal error. */
static int dir_read(struct conn *c, struct dir *d)
{
	ssize_t n = recv(d->src, buf, sizeof(buf), 0);

	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
	if (n == 0) {
		d->eof = 1;
		return dir_flush(c, d, now_ns());
	}
	size_t off = 0;

	if (delay_ns == 0 && !d->head) {
		/* fast path: straight through */
		ssize_t w = send(d->dst, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (w > 0) {
			off = (size_t)w;
			d->bytes += (uint64_t)w;
			*d->counter += (uint64_t)w;
		}
		if (off == (size_t)n)
			return 0;
	}
	struct chunk *ch = malloc(sizeof(*ch) + (size_t)n - off);

	if (!ch)
		return -1;
	ch->next = NULL;
	ch->due_ns = now_ns() + delay_ns;
	ch->len = (size_t)n - off;
	ch->off = 0;
	memcpy(ch->data, buf + off, ch->len);
	if (d->tail)
		d->tail->next = ch;
	else
		d->head = ch;
	d->tail = ch;
	d->queued += ch->len;
	return 0;
}

static void conn_accept(const struct sockaddr_in *target)
{
	int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

	if (cfd < 0)
		return;
	int sfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (sfd < 0 || connect(sfd, (const struct sockaddr *)target, sizeof(*target)) < 0) {
		perror("delay-relay: connect");
		close(cfd);
		if (sfd >= 0)
			close(sfd);
		return;
	}
	set_nonblock(cfd);
	set_nonblock(sfd);
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(cfd);
		close(sfd);
		return;
	}
	c->cfd = cfd;
	c->sfd = sfd;
	c->id = ++next_id;
	c->start_ns = now_ns();
	c->events[0] = c->events[1] = EPOLLIN;
	c->d[0] = (struct dir){ .src = cfd, .dst = sfd, .counter = (uint64_t *)&stats[0] };
	c->d[1] = (struct dir){ .src = sfd, .dst = cfd, .counter = (uint64_t *)&stats[1] };
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	stats[2]++;
	stats[3]++;
	struct epoll_event ev = { .events = EPOLLIN };

	ev.data.u64 = (uint64_t)(uintptr_t)c;
	epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &ev);
	ev.data.u64 = (uint64_t)(uintptr_t)c | 1u;
	epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
}

/* Arm the timer for the earliest pending deadline not yet due. */
static void timer_arm(uint64_t now)
{
	uint64_t next = 0;

	for (struct conn *c = conns; c; c = c->next)
		for (int i = 0; i < 2; i++) {
			struct chunk *h = c->d[i].head;

			if (h && h->due_ns > now && (!next || h->due_ns < next))
				next = h->due_ns;
		}
	struct itimerspec its = { 0 };

	if (next) {
		uint64_t dt = next - now;

		its.it_value.tv_sec = (time_t)(dt / 1000000000u);
		its.it_value.tv_nsec = (long)(dt % 1000000000u);
	}
	timerfd_settime(tfd, 0, &its, NULL);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int conn_finished(const struct conn *c)
{
	return c->d[0].shut && c->d[1].shut;
}

int main(int argc, char **argv)
{
	const char *listen_s = NULL, *connect_s = NULL, *netns = NULL, *stats_path = NULL;
	struct sockaddr_in la, ta;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--listen"))
			listen_s = argv[i + 1];
		else if (!strcmp(argv[i], "--connect"))
			connect_s = argv[i + 1];
		else if (!strcmp(argv[i], "--connect-netns"))
			netns = argv[i + 1];
		else if (!strcmp(argv[i], "--delay-ms"))
			delay_ns = (uint64_t)(atof(argv[i + 1]) * 1e6);
		else if (!strcmp(argv[i], "--stats"))
			stats_path = argv[i + 1];
		else if (!strcmp(argv[i], "--max-buffer"))
			max_buffer = (size_t)strtoull(argv[i + 1], NULL, 10);
		else {
			fprintf(stderr, "delay-relay: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (!listen_s || !connect_s || parse_addr(listen_s, &la) || parse_addr(connect_s, &ta)) {
		fprintf(stderr, "usage: delay-relay --listen IP:PORT --connect IP:PORT "
				"[--connect-netns PATH] [--delay-ms D] [--stats FILE]\n");
		return 2;
	}
	stats = dummy_stats;
	if (stats_path) {
		int fd = open(stats_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd < 0 || ftruncate(fd, 4 * sizeof(uint64_t)) < 0) {
			perror("delay-relay: stats");
			return 1;
		}
		void *p = mmap(NULL, 4 * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		if (p == MAP_FAILED) {
			perror("delay-relay: mmap");
			return 1;
		}
		stats = p;
		close(fd);
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;

	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(lfd, 128) < 0) {
		perror("delay-relay: listen");
		return 1;
	}
	if (netns) {
		int nfd = open(netns, O_RDONLY | O_CLOEXEC);

		if (nfd < 0 || setns(nfd, CLONE_NEWNET) < 0) {
			perror("delay-relay: setns");
			return 1;
		}
		close(nfd);
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 2 };

	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.u64 = 4;
	epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
	fprintf(stderr, "delay-relay: %s -> %s%s%s, one-way delay %.3f ms\n", listen_s, connect_s,
		netns ? " in " : "", netns ? netns : "", (double)delay_ns / 1e6);

	while (!stop) {
		struct epoll_event evs[64];
		int n = epoll_wait(epfd, evs, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("delay-relay: epoll_wait");
			return 1;
		}
		int timer = 0;

		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;

			if (tag == 2) {
				conn_accept(&ta);
				continue;
			}
			if (tag == 4) {
				uint64_t x;

				if (read(tfd, &x, sizeof(x)) < 0) {
					/* spurious */
				}
				timer = 1;
				continue;
			}
			struct conn *c = (struct conn *)(uintptr_t)(tag & ~(uint64_t)1);
			int which = (int)(tag & 1);

			if (c->dead)
				continue;
			if ((evs[i].events & (EPOLLIN | EPOLLHUP)) && !c->d[which].eof)
				if (dir_read(c, &c->d[which]) < 0)
					c->dead = 1;
			if (!c->dead && (evs[i].events & EPOLLOUT))
				if (dir_flush(c, &c->d[!which], now_ns()) < 0)
					c->dead = 1;
			if (evs[i].events & EPOLLERR)
				c->dead = 1;
		}
		/*
		 * Flush everything due, update interests, reap dead connections,
		 * arm the timer: all against one clock reading, so that every
		 * queued chunk is either due (written, or waiting for EPOLLOUT)
		 * or not yet due (covered by the timer).
		 */
		uint64_t now = now_ns();
		struct conn *c = conns;

		while (c) {
			struct conn *next = c->next;

			if (!c->dead && (timer || delay_ns))
				for (int i = 0; i < 2; i++)
					if (dir_flush(c, &c->d[i], now) < 0)
						c->dead = 1;
			if (c->dead || conn_finished(c)) {
				conn_close(c);
			} else {
				conn_update(c, 0, now);
				conn_update(c, 1, now);
			}
			c = next;
		}
		if (delay_ns)
			timer_arm(now);
	}
	while (conns)
		conn_close(conns);
	return 0;
}
