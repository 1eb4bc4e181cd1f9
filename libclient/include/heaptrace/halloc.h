/* halloc.h - Halloc's names on top of heaptrace's typed allocation.
 *
 * halloc(type, n) returns n zeroed objects of type (HT_NEW: the type's name
 * is recorded with the call site and counted in per-type statistics);
 * hfree(p) frees it (any heaptrace block, in fact). The statistics print to
 * stdout:
 *   halloc_print_total_memory_usage()      process totals and one line per type
 *   halloc_print_type_memory_usage(type)   one type: live and peak blocks and
 *                                          bytes, allocations in total
 *   halloc_print_saved_page_items()        Halloc lists the page mappings it
 *                                          keeps; heaptrace keeps no pages of
 *                                          its own, so this lists the items
 *                                          that matter instead: every live
 *                                          typed block (address, type, bytes,
 *                                          heap, allocation site) and a count.
 * Bytes are usable bytes (what the allocator set aside for the block).
 */
#ifndef HEAPTRACE_HALLOC_H
#define HEAPTRACE_HALLOC_H

#include <heaptrace/heaptrace.h>

#define halloc(type, n) HT_NEW(type, (n))
#define hfree(p) ht_free(p)
#define halloc_print_total_memory_usage() ht_print_total_memory_usage()
#define halloc_print_type_memory_usage(type) ht_print_type_memory_usage(type)
#define halloc_print_saved_page_items() ht_print_saved_page_items()

#endif /* HEAPTRACE_HALLOC_H */
