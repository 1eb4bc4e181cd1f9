/* summary.h - a session's model kept in the database (schemas/migrate-2.sql).
 *
 * htq_summary_write stores a built model; htq_summary_load fills a model
 * from the stored summary so that every query is written once, against
 * htq_model_t, whether the model was stored or built on the spot. */
#ifndef HTQ_SUMMARY_H
#define HTQ_SUMMARY_H

#include "model.h"

/* Stores m as the summary of session, replacing any earlier one, in one
 * transaction; its live blocks are grouped first (htq_model_leaks) and
 * stored by group. Returns 0 or -1 with err filled. */
int htq_summary_write(sqlite3 *db, int64_t session, htq_model_t *m, char *err, size_t errlen);

/* Fills an initialised model (htq_model_init) from the stored summary; its
 * leaks (m->leaks) only when leaks is set. Returns 1 if loaded, 0 if the
 * session has no summary of this model version, -1 on error. */
int htq_summary_load(sqlite3 *db, int64_t session, htq_model_t *m, int leaks, char *err,
                     size_t errlen);

/* Initialises m for session and loads its summary, or builds it from the
 * events when there is none. Returns 0 or -1 with err filled. */
int htq_model_get(htq_model_t *m, sqlite3 *db, int64_t session, int leaks, char *err,
                  size_t errlen);

#endif
