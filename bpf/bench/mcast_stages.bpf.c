// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The origin and gateway programs with a return at each named stage of
 * their paths (MCAST_BENCH_STAGE in lib/common.h), chosen by the read-only
 * mcast_bench_stop before load: `make bench` loads one per stage and times
 * the path up to it.
 */
#define MCAST_TEST_TUNNEL_KEY 1
#define MCAST_BENCH_STAGES 1
#include "programs.h"
