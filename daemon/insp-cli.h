/* The subcommands of the inspectd binary. Each takes the arguments after its
 * name (argv[0] is the subcommand name), parses its own flags with GOption,
 * prints its own errors, and returns the process exit status:
 * 0 success, 1 the work failed (invalid config, bad model...), 2 usage error. */
#pragma once

int insp_cmd_run(int argc, char **argv);
int insp_cmd_train(int argc, char **argv);
int insp_cmd_eval(int argc, char **argv);
int insp_cmd_check_config(int argc, char **argv);
int insp_cmd_cameras(int argc, char **argv);
int insp_cmd_features(int argc, char **argv);

/* Parses @argc/@argv with @entries under the summary @summary; on --help prints
 * the help and returns FALSE with *exit_status = 0, on a bad flag prints the
 * error and returns FALSE with *exit_status = 2. */
#include <glib.h>
#include <stdio.h>
gboolean insp_cli_parse(int *argc, char ***argv, const char *parameter_string, const char *summary,
                        const GOptionEntry *entries, int *exit_status);

/* The width in columns of the terminal @fd is on (TIOCGWINSZ), else
 * $COLUMNS, else 80; asked at each call, so a resized window is followed. */
int insp_cli_term_columns(int fd);
/* Rewrites the terminal line of @out (a terminal) with @text, cut to
 * insp_cli_term_columns() - 1 characters so that it never wraps (a wrapped
 * line is not rewritten by '\r' and scrolls), the rest of the old line
 * erased; @end also ends the line. */
void insp_cli_progress_line(FILE *out, const char *text, gboolean end);
