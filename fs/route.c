/*
 * fs/route: which pool worker runs which job (route_i.h).
 */
#include "route_i.h"

#include <string.h>

static bool route_has(const struct route_worker *w, const char *mailbox)
{
	return w->mailbox && strcmp(w->mailbox, mailbox) == 0;
}

/* whether a worker other than self has mailbox (only idle ones if idle_only) */
static bool route_elsewhere(const struct route_worker *w, size_t n, size_t self,
			    const char *mailbox, bool idle_only)
{
	for (size_t i = 0; i < n; i++)
		if (i != self && w[i].present && route_has(&w[i], mailbox) &&
		    (!idle_only || !w[i].busy))
			return true;
	return false;
}

bool route_urgent(const struct route_worker *w, size_t n, size_t self, const char *mailbox)
{
	return !mailbox || route_has(&w[self], mailbox) ||
	       !route_elsewhere(w, n, self, mailbox, true);
}

enum route_bg route_background(const struct route_worker *w, size_t n, size_t self,
			       const char *mailbox, size_t queued)
{
	if (!mailbox || route_has(&w[self], mailbox) || !route_elsewhere(w, n, self, mailbox, false))
		return ROUTE_TAKE;
	return queued >= 2 ? ROUTE_TAKE_LAST : ROUTE_SKIP;
}
