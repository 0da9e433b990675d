// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The origin and gateway programs as they were with the LPM trie policy
 * map (see lib/policy.h), for `make bench` to compare with the production
 * build in the same run.
 */
#define MCAST_TEST_TUNNEL_KEY 1
#define MCAST_BENCH_POLICY_LPM 1
#include "programs.h"
