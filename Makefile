# Cyclozzo build.
#
#   make            builds bin/cyclozzo, bin/cyclozzo-pyrt and the tools
#   make unit       builds and runs the C unit tests (tests/unit/test_*.c)
#   make fuzz       builds the libFuzzer targets (fuzz/fuzz_*.c) with clang
#   make SAN=1      builds everything with AddressSanitizer + UBSan into
#                   build/san/bin (run the integration tests against it with
#                   CYCLOZZO_BIN=build/san/bin)
#
# Every src/<module>/*.c except src/cli and src/runtime goes into
# build/libcyclozzo.a; binaries link against it. New files are picked up by
# wildcard, so adding a module needs no edit here unless it needs a library.

CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -Isrc -MMD -MP
LDLIBS  := -lyaml -lpcre2-8 -llmdb -lssl -lcrypto -lcurl -lseccomp -ljansson -lpthread -lm
LDLIBS  += -lsqlite3   # Search API store (src/search/: FTS5)
LDLIBS  += -lpq      # PostgreSQL kv engine (src/kv/postgres.c)
PG_CFLAGS := -I$(shell pg_config --includedir)
CFLAGS  += $(PG_CFLAGS)
LDLIBS += -lmemcached   # memcache on memcached servers (src/api/memcache_memcached.c)
LDLIBS  += $(shell pkg-config --libs vips) -lexif   # images service: libvips, libexif for metadata
VIPS_CFLAGS := $(shell pkg-config --cflags vips)   # images service: libvips headers
CFLAGS  += $(VIPS_CFLAGS)

PY_CFLAGS := $(shell pkg-config --cflags python3-embed)
PY_LIBS   := $(shell pkg-config --libs python3-embed)

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
BUILD   := build/san
BIN     := build/san/bin
else
BUILD   := build/rel
BIN     := bin
endif

LIB_SRC  := $(filter-out src/cli/% src/runtime/%,$(wildcard src/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/cli/*.c))
RT_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/runtime/*.c))
TOOLS    := $(patsubst tools/%.c,$(BIN)/%,$(wildcard tools/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

all: $(BIN)/cyclozzo $(if $(RT_OBJ),$(BIN)/cyclozzo-pyrt) $(TOOLS)

$(BUILD)/libcyclozzo.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/src/runtime/%.o: src/runtime/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PY_CFLAGS) -c $< -o $@

# glue.c includes the runtime's Python half verbatim (.incbin).
$(BUILD)/src/runtime/glue.o: src/runtime/glue.py

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BIN)/cyclozzo: $(CLI_OBJ) $(BUILD)/libcyclozzo.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libcyclozzo.a $(LDLIBS)

$(BIN)/cyclozzo-pyrt: $(RT_OBJ) $(BUILD)/libcyclozzo.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $(RT_OBJ) $(BUILD)/libcyclozzo.a $(PY_LIBS) $(LDLIBS)

$(BIN)/%: $(BUILD)/tools/%.o $(BUILD)/libcyclozzo.a
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/libcyclozzo.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libcyclozzo.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/libcyclozzo.a $(LDLIBS)

unit: $(UNIT_BIN)
	@sh tests/unit/run.sh $(UNIT_BIN)

# Fuzz targets: clang with libFuzzer, ASan and UBSan. The library is built
# once with coverage instrumentation (fuzzer-no-link) into its own archive;
# each target links against it.
FUZZ_FLAGS  := -g -O1 -std=gnu11 -D_GNU_SOURCE -Isrc $(PG_CFLAGS) $(VIPS_CFLAGS) -MMD -MP
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
build/fuzz/libcyclozzo.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^
build/fuzz/%: fuzz/%.c build/fuzz/libcyclozzo.a
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< build/fuzz/libcyclozzo.a $(LDLIBS)

fuzz: $(FUZZ_BIN)

clean:
	rm -rf build bin

.PHONY: all unit fuzz clean
.SECONDARY:
-include $(shell find build -name '*.d' 2>/dev/null)
