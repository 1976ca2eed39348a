// metarim kernels: the model's sizes (compile-time defines, so loops unroll) and every per-sample
// layout the kernels share with the host (cuda/src/layout.rs mirrors these; the `layout_info`
// kernel in reduce.cu reports them so the host checks the two agree at load time).
//
// Required defines (cuda/src/layout.rs `ModelDefines` passes them from a `ModelDims`):
//   N_MOD K_ACT HID INPUT D_K D_V IN_HEADS C_HEADS C_K COMM     RIM cell (COMM 0/1)
//   CELL_LSTM                                                     module cells (0: GRU, 1: LSTM)
//   ENC_BOW BOW_DIM C0 C1 C2 FILM FEATURE_NORM                    observation encoder (0/1 flags)
//   WORD_DIM INSTR_H MAX_TOK VOCAB                                instruction encoder
//   HEAD_H N_ACT                                                  actor / critic
//   SPB_RIM SPB_LSTM SPB_HEADS                                    samples per block
//
// Conventions: weights row-major [out x in] (PyTorch); per-sample buffers are rows of a
// [samples x width] matrix; training buffers are step-major, sample s = t * B + b.
#pragma once

#if !defined(N_MOD) || !defined(K_ACT) || !defined(HID) || !defined(INPUT) || !defined(D_K) || \
    !defined(D_V) || !defined(IN_HEADS) || !defined(C_HEADS) || !defined(C_K) ||             \
    !defined(COMM) || !defined(CELL_LSTM) || !defined(ENC_BOW) || !defined(BOW_DIM) || !defined(C0) ||               \
    !defined(C1) || !defined(C2) || !defined(FILM) || !defined(FEATURE_NORM) ||               \
    !defined(WORD_DIM) ||                                                                     \
    !defined(INSTR_H) || !defined(MAX_TOK) || !defined(VOCAB) || !defined(HEAD_H) ||          \
    !defined(N_ACT) || !defined(SPB_RIM) || !defined(SPB_LSTM) || !defined(SPB_HEADS)
#error "model.cuh: a model define is missing (see the list at the top)"
#endif

// ---- RIM cell (core::nn::rim) ---------------------------------------------------------------
#define NH (N_MOD * HID)                 // all modules' hidden states h
// The RIM state per sample: [h (NH) | c (NH)] with LSTM modules (core::nn::policy::state_len),
// h only with GRU modules. Everything that reads or writes a state row uses this stride.
#define RCL (CELL_LSTM ? NH : 0)         // cell-state width
#define RSL (NH + RCL)                   // state row width
#define QW (IN_HEADS * D_K)              // input-attention query width
#define UW (IN_HEADS * D_V)              // module input width
#define CW (COMM ? C_HEADS * C_K : 0)    // communication width
#define RGH ((CELL_LSTM ? 4 : 3) * HID)   // gate rows: GRU r, z, n; LSTM i, f, g, o
// One module's RNN block (core::nn::rim::rnn_view): w_ih [RGH x UW] | w_hh [RGH x H] | b_ih [RGH] |
// b_hh [RGH].
#define RNN_W_HH (RGH * UW)
#define RNN_B_IH (RNN_W_HH + RGH * HID)
#define RNN_B_HH (RNN_B_IH + RGH)
#define RNN_LEN (RNN_B_HH + RGH)
// One module's RNN cache (what core::nn::ops::gru_forward / lstm_forward keep): GRU
// [r | z | n | hn], LSTM [i | f | g | o | tanh(c')], H each, after the nonlinearities.
#define RNN_CACHE ((CELL_LSTM ? 5 : 4) * HID)

// Step cache (core::nn::rim::cache_layout, the same order and sizes).
#define RC_MASK 0
#define RC_NULL (RC_MASK + N_MOD)
#define RC_KX (RC_NULL + N_MOD)
#define RC_VX (RC_KX + QW)
#define RC_Q (RC_VX + UW)
#define RC_AX (RC_Q + N_MOD * QW)
#define RC_U (RC_AX + N_MOD * IN_HEADS)
#define RC_RNN (RC_U + N_MOD * UW)
#define RC_HT (RC_RNN + N_MOD * RNN_CACHE)
#define RC_CQ (RC_HT + (COMM ? NH : 0))
#define RC_CK (RC_CQ + N_MOD * CW)
#define RC_CV (RC_CK + N_MOD * CW)
#define RC_P (RC_CV + N_MOD * CW)
#define RC_O (RC_P + (COMM ? N_MOD * C_HEADS * N_MOD : 0))
#define RC_GATE (RC_O + N_MOD * CW)
#define RC_TANH (RC_GATE + (COMM ? NH : 0))
#define RIM_CACHE (RC_TANH + (COMM ? NH : 0))

// Backward deltas of one step (pre-activation gradients of every weight, for the wgrad
// reductions): dkx [QW] | dvx [UW] | dq [N x QW] | gi [N x RGH] | gh [N x RGH] | dcq, dck, dcv
// [N x CW each] | dpg, dpo [N x H each, communication only]. (LSTM modules: gi and gh are the
// same gate gradients, kept twice so the reductions do not depend on the cell.)
#define RD_DKX 0
#define RD_DVX (RD_DKX + QW)
#define RD_DQ (RD_DVX + UW)
#define RD_GI (RD_DQ + N_MOD * QW)
#define RD_GH (RD_GI + N_MOD * RGH)
#define RD_DCQ (RD_GH + N_MOD * RGH)
#define RD_DCK (RD_DCQ + N_MOD * CW)
#define RD_DCV (RD_DCK + N_MOD * CW)
#define RD_DPG (RD_DCV + N_MOD * CW)
#define RD_DPO (RD_DPG + (COMM ? NH : 0))
#define RIM_DELTA (RD_DPO + (COMM ? NH : 0))

// The RIM's nine tensors, in the order the step kernels take them (rim_fwd_step, rim_bwd_step):
// the input key, value and per-module query projections, the module RNNs (module-major,
// RNN_LEN each), the communication query, key, value, gate and output projections (per module).
struct RimTensors {
    const float* w_k;
    const float* w_v;
    const float* w_q;
    const float* rnn;
    const float* c_q;
    const float* c_k;
    const float* c_v;
    const float* c_g;
    const float* c_o;
};

// One phase of a RIM step kernel over N_MOD * PARTS items per sample, module-major: calls
// f(s, r, b, m, k) for item r = m * PARTS + k of sample s (batch row b), m the module and k the
// part of it (a hidden unit: PARTS = HID, the row of the state; an attention head: C_HEADS or
// IN_HEADS; a communication column: CW). The module / part split is written here once for the
// step kernels' phases (rim_fwd.cu, rim_bwd.cu).
template <u32 PARTS, typename F>
__device__ __forceinline__ void for_module_rows(const SampleBlock& blk, F f) {
    for_sample_rows<SPB_RIM>(blk, N_MOD * PARTS,
                             [&](u32 s, u32 r, u32 b) { f(s, r, b, r / PARTS, r % PARTS); });
}

// Parameter groups: lists of kernel parameters that several entry points take in the same order,
// written once here as the host writes them once (cuda/src/args.rs `arg_group!`, whose names the
// kernel module's tests check against these lists, expanded).
//
// The RIM's nine tensors, first in rim_fwd_step and rim_bwd_step (args.rs RimWeights), and the
// same names as a RimTensors initialiser.
#define RIM_TENSOR_PARAMS                                                                      \
    const float* __restrict__ w_k, const float* __restrict__ w_v, const float* __restrict__ w_q, \
        const float* __restrict__ rnn, const float* __restrict__ c_q,                          \
        const float* __restrict__ c_k, const float* __restrict__ c_v,                          \
        const float* __restrict__ c_g, const float* __restrict__ c_o
#define RIM_TENSOR_ARGS {w_k, w_v, w_q, rnn, c_q, c_k, c_v, c_g, c_o}
// The operands of one memory step backward, after the weights in rim_bwd_step and lstm_bwd_step
// (args.rs MemoryBwd): state_in [batch x state width] (the state the forward read), cache (the
// forward's), dh_loss [batch x NH] (the loss gradient through the heads w.r.t. the step's output
// h), carry [batch x state width] (the gradient w.r.t. the step's output state, from step t + 1;
// null for none; may alias carry_out), reset [batch] (1: the step started an episode, nothing
// flows into step t - 1; may be null), carry_out (dL/d state_{t-1}), dx [batch x INPUT], delta.
#define MEMORY_BWD_PARAMS                                                                      \
    const float* __restrict__ state_in, const float* __restrict__ cache,                       \
        const float* __restrict__ dh_loss, const float* carry, const u8* __restrict__ reset,   \
        float* carry_out, float* __restrict__ dx, float* __restrict__ delta, u32 batch

// ---- LSTM memory (the baseline: one LSTM as wide as all modules) ----------------------------
#define MW NH                            // memory width
#define LSTM_CACHE (5 * MW)              // [i | f | g | o | tanh(c')] after the nonlinearities
#define LSTM_DELTA (4 * MW)              // gate pre-activation gradients

// ---- Observation encoder (core::nn::encoder) ------------------------------------------------
#define CIN (ENC_BOW ? BOW_DIM : 3)
#define BOW_ROWS 48
// FiLM (FILM 1): per-channel coefficients of the three convs from the instruction embedding,
// [gamma1 C0 | beta1 C0 | gamma2 C1 | beta2 C1 | gamma3 C2 | beta3 C2] = W_film e + b_film.
#define FILM_N (FILM ? 2 * (C0 + C1 + C2) : 0)
#define FC_G1 0
#define FC_B1 C0
#define FC_G2 (2 * C0)
#define FC_B2 (2 * C0 + C1)
#define FC_G3 (2 * (C0 + C1))
#define FC_B3 (2 * (C0 + C1) + C2)
#define EP_W1 (ENC_BOW ? BOW_ROWS * BOW_DIM : 0)
#define EP_B1 (EP_W1 + C0 * CIN * 4)
#define EP_W2 (EP_B1 + C0)
#define EP_B2 (EP_W2 + C1 * C0 * 4)
#define EP_W3 (EP_B2 + C1)
#define EP_B3 (EP_W3 + C2 * C1 * 4)
// FiLM generator [FILM_N x INSTR_H] and bias [FILM_N] (empty without FiLM).
#define EP_FW (EP_B3 + C2)
#define EP_FB (EP_FW + FILM_N * INSTR_H)
#define ENC_PARAMS (EP_FB + FILM_N)
// Cache: conv1 pre-activations [C0][6][6] | pooled map [C0][3][3] | conv2 [C1][2][2] | conv3 [C2]
// (with FiLM these three are the modulated pre-activations, what the ReLUs read) | FiLM
// coefficients [FILM_N] | unmodulated pre-activations conv1 | conv2 | conv3 (FiLM only; what
// gamma's gradient needs). core::nn::encoder::encoder_cache_layout, the same order and sizes.
#define EC_Z1 0
#define EC_POOL (EC_Z1 + C0 * 36)
#define EC_Z2 (EC_POOL + C0 * 9)
#define EC_Z3 (EC_Z2 + C1 * 4)
#define EC_FILM (EC_Z3 + C2)
#define EC_R1 (EC_FILM + FILM_N)
#define EC_R2 (EC_R1 + (FILM ? C0 * 36 : 0))
#define EC_R3 (EC_R2 + (FILM ? C1 * 4 : 0))
#define ENC_CACHE (EC_R3 + (FILM ? C2 : 0))
// Deltas: dz3 [C2] | dz2 [C1][4] | dpool [C0][9] | (bag of words) d input map [CIN][49] |
// (FiLM) d coefficients [FILM_N]. dz3, dz2 and dpool are the gradients of the *unmodulated*
// pre-activations (what the conv weights' gradients need); dpool only at each window's argmax.
#define ED_Z3 0
#define ED_Z2 (ED_Z3 + C2)
#define ED_POOL (ED_Z2 + C1 * 4)
#define ED_X (ED_POOL + C0 * 9)
#define ED_FILM (ED_X + (ENC_BOW ? CIN * 49 : 0))
#define ENC_DELTA (ED_FILM + FILM_N)
// Feature normalisation (FEATURE_NORM 1, core::nn::encoder "Feature normalisation"): the C2
// features relu(z3) are layer-normalised per sample, no learned scale or shift. Nothing more is
// cached: the backward recomputes the statistics from the cached z3, as the core does.
#define LN_EPS 1e-5f
// Shared memory of the normalisation (floats): the features before it [C2] and its statistics.
#define ENC_NORM_SMEM (FEATURE_NORM ? C2 + 4 : 0)

// ---- Instruction encoder (core::nn::instr) --------------------------------------------------
#define IG3 (3 * INSTR_H)
#define IP_W_IH (VOCAB * WORD_DIM)
#define IP_W_HH (IP_W_IH + IG3 * WORD_DIM)
#define IP_B_IH (IP_W_HH + IG3 * INSTR_H)
#define IP_B_HH (IP_B_IH + IG3)
#define INSTR_PARAMS (IP_B_HH + IG3)
// Cache per segment (the CPU's): hidden states [(MAX_TOK + 1) x Hi] (h_0 = 0 first) | gate
// caches [MAX_TOK x 4Hi] ([r | z | n | hn] per token).
#define IC_GATES ((MAX_TOK + 1) * INSTR_H)
#define INSTR_CACHE (IC_GATES + MAX_TOK * 4 * INSTR_H)
// Deltas per (segment, token slot): gi [3Hi] | gh [3Hi] | d embedding row [WORD_DIM].
#define ID_GH IG3
#define ID_DX (2 * IG3)
#define INSTR_DELTA (ID_DX + WORD_DIM)

// ---- Heads (core::nn::heads) ----------------------------------------------------------------
// Actor [w1 HH x W | b1 HH | w2 A x HH | b2 A] then critic [w1 HH x W | b1 HH | w2 HH | b2 1].
#define HP_A_B1 (HEAD_H * MW)
#define HP_A_W2 (HP_A_B1 + HEAD_H)
#define HP_A_B2 (HP_A_W2 + N_ACT * HEAD_H)
#define HP_C_W1 (HP_A_B2 + N_ACT)
#define HP_C_B1 (HP_C_W1 + HEAD_H * MW)
#define HP_C_W2 (HP_C_B1 + HEAD_H)
#define HP_C_B2 (HP_C_W2 + HEAD_H)
#define HEADS_PARAMS (HP_C_B2 + 1)
#define HEADS_CACHE (2 * HEAD_H)         // tanh activations: actor | critic
// Deltas: d logits [A] | d value [1] | actor hidden pre-activation [HH] | critic [HH].
#define HD_DV N_ACT
#define HD_DA (HD_DV + 1)
#define HD_DC (HD_DA + HEAD_H)
#define HEADS_DELTA (HD_DC + HEAD_H)
// PPO terms per sample (core::nn::loss::PpoTerms, in field order).
#define N_TERMS 9

// ---- Shared memory per sample of the fused step kernels (floats) ----------------------------
#define RF_SMEM (INPUT + NH + QW + UW + N_MOD * QW + N_MOD * IN_HEADS + 2 * N_MOD + N_MOD * UW + \
                 NH + 4 * N_MOD * CW + N_MOD * C_HEADS * N_MOD + RCL)
#define RB_SMEM (5 * NH + N_MOD + 4 * N_MOD * CW + N_MOD * C_HEADS * N_MOD + 2 * N_MOD * RGH +       \
                 N_MOD * UW + N_MOD * IN_HEADS + N_MOD * QW + QW + UW + RCL)
#define LF_SMEM (INPUT + 2 * MW)
#define LB_SMEM (4 * MW + 2 * MW)
#define HF_SMEM (MW + 2 * HEAD_H)
#define HB_SMEM (N_ACT + 1 + 2 * HEAD_H)
#define ENC_FWD_SMEM (CIN * 49 + C0 * 36 + C0 * 9 + C1 * 4 + FILM_N + ENC_NORM_SMEM)
#define ENC_BWD_SMEM (C2 + C1 * 4 + C0 * 9 + FILM_N + ENC_NORM_SMEM)
#define INSTR_FWD_SMEM (INSTR_H + WORD_DIM)
#define INSTR_BWD_SMEM (2 * INSTR_H + 2 * IG3)
