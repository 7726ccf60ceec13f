/* The daemon's one intrusive doubly linked list. A list is any struct with
 * head and tail pointers (LIST_OF, or one with counters of its own); an
 * element embeds a LIST_LINK and names it. Macros, so one header serves every
 * element type: pass plain variables, arguments are evaluated more than once. */
#ifndef ZKND_LIST_H
#define ZKND_LIST_H

#include <stddef.h>

#define LIST_OF(type) struct { type *head, *tail; }
#define LIST_LINK(type) struct { type *prev, *next; }

#define list_push_head(l, e, link)                                                         \
    do {                                                                                   \
        (e)->link.prev = NULL;                                                             \
        (e)->link.next = (l)->head;                                                        \
        if ((l)->head)                                                                     \
            (l)->head->link.prev = (e);                                                    \
        else                                                                               \
            (l)->tail = (e);                                                               \
        (l)->head = (e);                                                                   \
    } while (0)

#define list_push_tail(l, e, link)                                                         \
    do {                                                                                   \
        (e)->link.next = NULL;                                                             \
        (e)->link.prev = (l)->tail;                                                        \
        if ((l)->tail)                                                                     \
            (l)->tail->link.next = (e);                                                    \
        else                                                                               \
            (l)->head = (e);                                                               \
        (l)->tail = (e);                                                                   \
    } while (0)

#define list_remove(l, e, link)                                                            \
    do {                                                                                   \
        if ((e)->link.prev)                                                                \
            (e)->link.prev->link.next = (e)->link.next;                                    \
        else                                                                               \
            (l)->head = (e)->link.next;                                                    \
        if ((e)->link.next)                                                                \
            (e)->link.next->link.prev = (e)->link.prev;                                    \
        else                                                                               \
            (l)->tail = (e)->link.prev;                                                    \
        (e)->link.prev = (e)->link.next = NULL;                                            \
    } while (0)

#define list_for_each(it, l, link) for ((it) = (l)->head; (it); (it) = (it)->link.next)

/* it may be unlinked or freed in the body. */
#define list_for_each_safe(it, nx, l, link)                                                \
    for ((it) = (l)->head; (it) && ((nx) = (it)->link.next, 1); (it) = (nx))

#endif
