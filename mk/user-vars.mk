# Checks of the variables a user passes to make (`make run DATE=...`), done by make itself while it
# reads the Makefile: a bad value stops make with one line before any recipe (install included)
# runs, and no value ever reaches a shell that could run part of it (`DATE='2024-01-02; touch X'`,
# `DATE='$$(touch X)'`). Included by the top Makefile.
#
# Every variable a requested goal reads is checked against its kind; any other variable set on the
# command line (an override of a cluster.env name, say) may hold only the characters of a name,
# a URL or a duration. PYTEST_ARGS is the exception: it is a list of pytest arguments on purpose.

_DIGITS := 0 1 2 3 4 5 6 7 8 9
_LETTERS := a b c d e f g h i j k l m n o p q r s t u v w x y z \
	A B C D E F G H I J K L M N O P Q R S T U V W X Y Z
#: The characters of a word: a step, a backend, an executor, a duration (15m), a node count.
_WORD := $(_DIGITS) $(_LETTERS) . _ -
#: A name, URL or path of an overridden setting (http://host:8333, bucket/prefix, user@host).
_SETTING := $(_WORD) : / @ + = ,

# $(call _without,TEXT,CHARS): TEXT with each of CHARS removed (make's own subst: no shell).
_without = $(if $(2),$(call _without,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
# $(call _spaced,TEXT): non-empty when TEXT holds whitespace anywhere (one word between the x's).
_spaced = $(filter-out 1,$(words x$(1)x))
# $(call _only,TEXT,CHARS): non-empty when TEXT holds whitespace or a character not in CHARS.
_only = $(or $(call _spaced,$(1)),$(call _without,$(1),$(2)))

# $(call _check,NAME,CHARS,EXPECTED): stop with one line when NAME's value is not made of CHARS.
_check = $(if $(call _only,$($(1)),$(2)),$(error $(1)='$($(1))': expected $(3)))

# The variables each goal reads, by kind.
_DATE_VARS_run := DATE
_DATE_VARS_trigger := DATE
_DATE_VARS_logs := DATE
_DATE_VARS_backfill := FROM TO
_NUMBER_VARS_airflow := PORT
_NUMBER_VARS_bench := SCALE
_NUMBER_VARS_ui := UI_PORT
_WORD_VARS_bench := BACKEND
_WORD_VARS_run := REEXTRACT
_WORD_VARS_logs := STEP
_WORD_VARS_up := NODES DATA_BACKEND EXECUTOR HELM_TIMEOUT OBJECTSTORE_ENABLED

_GOALS := $(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))
_DATE_VARS := $(sort $(foreach goal,$(_GOALS),$(_DATE_VARS_$(goal))))
_NUMBER_VARS := $(sort $(foreach goal,$(_GOALS),$(_NUMBER_VARS_$(goal))))
_WORD_VARS := $(sort $(foreach goal,$(_GOALS),$(_WORD_VARS_$(goal))))
_COMMAND_LINE_VARS := $(filter-out PYTEST_ARGS $(_DATE_VARS) $(_NUMBER_VARS) $(_WORD_VARS), \
	$(foreach name,$(.VARIABLES),$(if $(filter command line,$(origin $(name))),$(name))))

$(foreach name,$(_DATE_VARS),$(call _check,$(name),$(_DIGITS) -,a day YYYY-MM-DD))
$(foreach name,$(_NUMBER_VARS),$(call _check,$(name),$(_DIGITS),a number))
$(foreach name,$(_WORD_VARS),$(call _check,$(name),$(_WORD),letters digits . _ - only))
$(foreach name,$(_COMMAND_LINE_VARS),$(call _check,$(name),$(_SETTING),letters digits and . _ - : / @ + = only))
