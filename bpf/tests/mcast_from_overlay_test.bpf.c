// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * mcast_from_overlay for BPF_PROG_RUN: identical but for the receive-side
 * tunnel key, which comes from the mcast_test_tunnel map (see lib/tunnel.h).
 */
#define MCAST_TEST_TUNNEL_KEY 1
#include "../mcast_from_overlay.bpf.c"
