// CPU kernel of mamba2_step: causal_conv1d_update's kernel over the rows of xBC into the workspace, then
// ssd_state_update's kernel reading x, B and C from the workspace: the same functions as the unfused
// ops, so the fused step equals them bit for bit. The handler runs the two stages one after the other
// (each spread over the thread pool).
#pragma once

#include "causal_conv1d_update/causal_conv1d_update.h"
#include "mamba2_step/params.h"
#include "ssd_state_update/ssd_state_update.h"
