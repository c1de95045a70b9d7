/* es-train.h: running a model on a backend. EsTrainer holds the device copy of the
 * parameters, gradients, optimizer state and activations for one micro-batch size and
 * does training steps (forward, loss, backward, accumulation, clipping, regularization,
 * optimizer, learning-rate schedule) and evaluation. EsInfer is the small inference-only
 * runner: two activation buffers reused between layers. Epochs, datasets and metrics
 * over a whole split live in core (EspalierTrainer); this file sees one batch at a time.
 *
 * Dimension key: B = batch rows, D = input floats per row, C = classes. */
#pragma once

#include "es-backend.h"
#include "es-model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_LOSS_SOFTMAX_XENT,  /* integer labels; the model outputs logits or a Softmax */
  ES_LOSS_BCE,           /* targets in [0,1] (one per output); logits or a Sigmoid */
  ES_LOSS_MSE,           /* float targets, one per output */
} EsLossKind;

typedef enum {
  ES_OPT_SGD,
  ES_OPT_MOMENTUM,
  ES_OPT_NESTEROV,
  ES_OPT_ADAM,
  ES_OPT_ADAMW,
} EsOptKind;

/* Mixed precision (es_train_config_default: fp32). bf16 and fp16 run the matrix
 * products (Dense, Conv2D) with 16-bit inputs and fp32 accumulation on backends that
 * can (the CUDA backend; the CPU backends refuse them with ES_ERR_UNSUPPORTED from
 * es_trainer_new); parameters, optimizer state, element-wise ops, the loss and
 * BatchNorm statistics stay fp32 (master weights). fp16 also scales the loss
 * dynamically (the loss_scale_* fields; PyTorch's GradScaler defaults): its gradient
 * is multiplied by the scale, the parameter gradients divided by it before masks,
 * clipping and the update; a step whose gradients hold an inf or NaN is skipped (the
 * parameters and optimizer state unchanged) and the scale multiplied by
 * loss_scale_backoff; after loss_scale_interval clean steps in a row it is multiplied
 * by loss_scale_growth. bf16 and fp32 keep the scale at 1. */
typedef enum {
  ES_PRECISION_FP32,
  ES_PRECISION_BF16,
  ES_PRECISION_FP16,
} EsPrecision;

typedef enum {
  ES_LR_CONSTANT,
  ES_LR_STEP,            /* lr * gamma^(floor(step / step_size)) */
  ES_LR_COSINE,          /* from lr down to min_lr over total_steps */
} EsLrSchedule;

typedef struct {
  EsLossKind   loss;
  EsOptKind    optimizer;
  float        lr;            /* 1e-3 */
  float        momentum;      /* SGD momentum 0.9 */
  float        beta1, beta2;  /* 0.9, 0.999 */
  float        eps;           /* 1e-7 (Keras' Adam default) */
  float        weight_decay;  /* AdamW decoupled decay (0.01) */
  float        l1, l2;        /* regularization added to the gradient (0) */
  float        clip_norm;     /* clip the global gradient norm (0: off) */
  int          accum_steps;   /* micro-batches per optimizer step (1) */
  EsLrSchedule schedule;
  int          step_size;     /* ES_LR_STEP: optimizer steps between decays */
  float        gamma;         /* ES_LR_STEP decay factor (0.1) */
  float        min_lr;        /* ES_LR_COSINE floor (0) */
  int64_t      total_steps;   /* ES_LR_COSINE length in optimizer steps */
  int          warmup_steps;  /* linear warm-up from 0 over this many steps (0) */
  uint64_t     seed;          /* dropout masks */
  /* For planning only: what es_mem_plan and the trainer's micro-batch halving count
   * for features switched on later (es_trainer_set_mask, es_trainer_set_fake_quant
   * on every Dense/Conv2D layer, es_trainer_set_teacher with this teacher). Those
   * calls allocate what they need whatever these say (false, false, NULL). */
  bool           plan_mask;
  bool           plan_fake_quant;
  const EsModel *plan_teacher;
  /* For planning only: the backend the plan is for. true: the CUDA backend (es-cuda.h),
   * whose convolutions take (C*K*K + OC)*OH*OW floats of workspace per image (columns
   * and output columns; no per-thread partials); false: the CPU backends' layout.
   * es_trainer_new sets it from its backend for its own planning. */
  bool           plan_cuda;
  /* For planning only: the CPU backends' compute threads, each with its own
   * convolution workspace (0 counts as 1; es_trainer_new sets it from its backend), and
   * whether es_trainer_prefetch will stage batches (two micro-batches of inputs,
   * labels and targets as data; what core does on the CUDA backend when the dataset is
   * not resident). */
  int            plan_threads;
  bool           plan_prefetch;
  /* mixed precision (see EsPrecision) */
  EsPrecision    precision;          /* ES_PRECISION_FP32 */
  float          loss_scale_init;    /* fp16: first scale (65536) */
  int            loss_scale_interval;/* fp16: clean steps before growing (2000) */
  float          loss_scale_growth;  /* fp16: growth factor (2) */
  float          loss_scale_backoff; /* fp16: factor on overflow (0.5) */
} EsTrainConfig;

void        es_train_config_default (EsTrainConfig *cfg);
const char *es_loss_kind_name       (EsLossKind kind);
bool        es_loss_kind_from_name  (const char *name, EsLossKind *kind);
const char *es_opt_kind_name        (EsOptKind kind);
bool        es_opt_kind_from_name   (const char *name, EsOptKind *kind);
const char *es_lr_schedule_name     (EsLrSchedule s);
bool        es_lr_schedule_from_name(const char *name, EsLrSchedule *s);
const char *es_precision_name       (EsPrecision p);           /* "fp32", "bf16", "fp16" */
bool        es_precision_from_name  (const char *name, EsPrecision *p);

/* One batch in host memory. Exactly one of x_f32 / x_u8 is set; x_u8 is converted
 * as x * scale + shift on the way in. labels for ES_LOSS_SOFTMAX_XENT, targets (B, out)
 * for the others. */
typedef struct {
  int            B;
  const float   *x_f32;    /* (B, D) */
  const uint8_t *x_u8;     /* (B, D) */
  float          scale, shift;
  const int32_t *labels;   /* (B) */
  const float   *targets;  /* (B, out) */
  /* Or rows of a dataset resident in backend memory (es_resident_new), instead of the
   * four pointers above: row b of the batch is row rows[b] (B, host memory) of
   * resident, its uint8 inputs converted with scale and shift. For evaluation, rows
   * may be NULL: then row b is row first + b, and no row index is copied to the
   * backend (a split kept resident in its own order). */
  const struct EsResident *resident;
  const int32_t           *rows;     /* (B) */
  int64_t                  first;
} EsBatch;

typedef struct {
  double loss_sum;         /* sum over rows of the per-row loss */
  int    correct;          /* rows whose argmax matched (classification) */
  int    rows;
} EsStepStats;

/* The bytes a run needs, by kind, planned before anything is allocated: an upper bound
 * on what a trainer of cfg (with the plan_* fields as its run will use the features
 * they name) and batch rows charges to its backend's budget through a run of training
 * steps and evaluations, on top of what was charged when es_trainer_new was called
 * (the backend's own buffers, a resident dataset). Counted: the trainer's allocations
 * (es_trainer_new's, the device tables of deferred statistics and CUDA Graphs, the
 * row indices of resident batches, the synchronized BatchNorm partials, the staged
 * batches of es_trainer_prefetch, the mask, QAT and teacher buffers) and the workspaces
 * the backend's ops take at the least (convolution columns per thread, 16-bit operand
 * copies, the CUDA backend's uint8 staging and argmax buffers). Under a budget the
 * backend takes no more unless the budget has room for it, so a limit of exactly
 * es_budget_used () + total runs without a failure, a halving or an fp32 fallback.
 * training false plans inference instead: what an EsInfer of batch rows (below)
 * charges through es_infer_new and its runs, its blocks and the workspaces its ops
 * take (convolution columns, the CPU backend's packed copies of large Dense layers);
 * of cfg (may be NULL) only the plan_cuda and plan_threads fields count. Under a limit
 * of exactly es_budget_used () + total an EsInfer is made and its ops get the
 * workspaces they ask for; with less, es_infer_new fails with ES_ERR_BUDGET, or an op
 * the budget refuses its workspace runs without one (the same results up to rounding,
 * slower).
 * total is the sum of the kinds. */
typedef struct {
  size_t weights, gradients, optimizer, activations, workspace, data;
  size_t total;
} EsMemPlan;

void es_mem_plan (const EsModel *model, const EsTrainConfig *cfg, int batch,
                  bool training, EsMemPlan *plan);

typedef struct EsTrainer EsTrainer;

/* A trainer for `model` (borrowed: it must outlive the trainer; es_trainer_sync writes
 * back into it) with batches of `batch` rows. When the backend's budget cannot hold a
 * batch, the micro-batch is halved (and accumulation doubled, so the effective batch
 * stays `batch` rows) until it fits; es_trainer_micro_batch tells the result. Fails with
 * ES_ERR_BUDGET when even one row does not fit. */
EsTrainer  *es_trainer_new          (EsModel *model, EsBackend *be, const EsTrainConfig *cfg,
                                     int batch, EsError *err);
void        es_trainer_free         (EsTrainer *tr);
int         es_trainer_micro_batch  (const EsTrainer *tr);
int         es_trainer_accum_steps  (const EsTrainer *tr);
int64_t     es_trainer_step_count   (const EsTrainer *tr);   /* optimizer steps done */
float       es_trainer_current_lr   (const EsTrainer *tr);
/* Mixed precision: the current loss scale (1 unless fp16) and the optimizer steps
 * skipped because the scaled gradients overflowed (not counted in step_count). With
 * deferred statistics on the device path (below), the device decides and the host
 * learns at es_trainer_read_stats: until then these tell the last reading's, and
 * step_count counts the batches since as steps taken. */
float       es_trainer_loss_scale   (const EsTrainer *tr);
int64_t     es_trainer_skipped_steps(const EsTrainer *tr);
/* Checkpoints: fp16 dynamic loss scaling's whole state, so that a resumed run skips
 * and rescales where the first would have: the scale, the clean steps in a row since
 * it last changed (growth comes after loss_scale_interval of them) and the skipped
 * steps. get reads the device's current state (a wait; any pending statistics are
 * folded in as es_trainer_read_stats would, to be added by the next reading); false
 * when the trainer does not scale (not fp16). set: false and ES_ERR_UNSUPPORTED when
 * not fp16, ES_ERR_INVALID unless scale is finite and positive, clean and skipped >= 0.
 * Without a set (an older checkpoint) a run starts from loss_scale_init. */
bool        es_trainer_get_loss_scaler (EsTrainer *tr, float *scale, int64_t *clean,
                                        int64_t *skipped);
bool        es_trainer_set_loss_scaler (EsTrainer *tr, float scale, int64_t clean,
                                        int64_t skipped, EsError *err);

/* One training batch of up to `batch` rows: forward, loss, backward over micro-batches,
 * then one optimizer step when cfg.accum_steps batches have accumulated. Stats are
 * added into *stats (may be NULL). ES_ERR_NUMERIC when the loss is not finite; the
 * parameters are then left as they were before this batch's optimizer step. */
bool        es_trainer_train_batch  (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats,
                                     EsError *err);
/* Forward in inference mode (dropout off, BatchNorm running statistics) with loss;
 * pred (B) receives the argmax when not NULL. */
bool        es_trainer_eval_batch   (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats,
                                     int32_t *pred, EsError *err);
/* Pruning: keep the weights mask (n_params bytes on the host, 1 keep, 0 pruned;
 * es-prune.h) zero. The device parameters are multiplied by it now and after every
 * optimizer step, so pruned weights stay zero through fine-tuning (with accumulation
 * too); the gradients are masked before each step as well, as if the forward pass
 * multiplied the weights by the mask (TF-MOT, torch.nn.utils.prune), so pruned weights
 * take no part in clipping and gather no optimizer state. es_trainer_reload masks the
 * reloaded parameters. Call it again after changing the mask (gradual pruning); NULL
 * removes it, and pruned weights may grow back. */
bool        es_trainer_set_mask     (EsTrainer *tr, const uint8_t *mask, EsError *err);
/* Quantization-aware training: the Dense/Conv2D layers chosen by layers (n_layers; NULL
 * turns it off) see their weights and inputs fake-quantized in the forward pass as the
 * int8 kernels will quantize them (es-quant.h: per-channel symmetric weights, uint8
 * inputs over a range tracked as an exponential moving average of each batch's min and
 * max), and the backward pass lets gradients straight through (inside the input range)
 * to the fp32 master weights. Evaluation runs fake-quantized too.
 * In detail: the range of each training micro-batch's input updates the tracked one as
 * range = 0.99 range + 0.01 batch (the first one sets it) before the batch is quantized
 * over it; evaluation and es_trainer_predict quantize over the tracked range without
 * updating it (over the batch's own range while none is tracked yet). Weight and input
 * gradients are those of the float layer at the fake-quantized weights and inputs,
 * the input gradient zeroed where the input lies outside [min(lo,0), max(hi,0)].
 * Entries of layers for other kinds of layers are ignored; choosing no Dense or Conv2D
 * layer is ES_ERR_INVALID. A layer chosen again keeps its tracked range; reduce_range
 * quantizes inputs to 0..127 instead of 0..255. */
bool        es_trainer_set_fake_quant (EsTrainer *tr, const bool *layers, bool reduce_range,
                                       EsError *err);
/* The input range QAT tracked for layer i (before the widening to contain 0 that
 * es_quant_act_params does); false when it tracks none. */
bool        es_trainer_get_input_range (const EsTrainer *tr, int layer, float *lo, float *hi);
/* Knowledge distillation from teacher (borrowed; it must outlive the trainer; same
 * input and output shapes): its logits (a final Softmax skipped) on each micro-batch,
 * run in inference mode on the same backend, soften at temperature T, and the loss
 * becomes (1 - alpha) CE(labels) + alpha T^2 KL(softmax(teacher / T) || softmax(student
 * / T)) (Hinton et al. 2015). Only with ES_LOSS_SOFTMAX_XENT; NULL turns it off. Stats
 * report the mixed loss.
 * In detail: the teacher's parameters are copied to the device now (call again after
 * changing them); evaluation reports the mixed loss too. A student ending in Softmax
 * has it fused into the loss as with plain cross-entropy. temperature > 0, alpha in
 * [0, 1]; a teacher ending in Sigmoid is refused. On failure distillation is off. */
bool        es_trainer_set_teacher  (EsTrainer *tr, const EsModel *teacher, float temperature,
                                     float alpha, EsError *err);
/* The model's outputs (B, out) on B rows of x (B, D), into host memory out: forward in
 * inference mode as es_trainer_eval_batch runs it (QAT fake-quantized, a final Softmax
 * or Sigmoid applied), in micro-batches. */
bool        es_trainer_predict      (EsTrainer *tr, const float *x, int B, float *out,
                                     EsError *err);
/* Data-parallel training (several processes, each with its own trainer and its own
 * rows). On the last micro-batch of every optimizer step, as backward finishes each
 * layer's parameter gradients (last layer first), bucket_ready (may be NULL) is told
 * the range [offset, offset + count) of the gradient vector (es_model_n_params floats,
 * in parameter order, device memory of be) that is now final, so a reduction can start
 * while the rest of backward runs. Then, before masks, clipping, regularization and the
 * update, finish must leave in grads (n floats, device memory) the gradients every
 * process is to apply: the average over processes of their mean-over-rows gradients,
 * weighted by rows when processes had different row counts (rows: this process'
 * rows in this step). Returning false (err set) fails the batch as
 * es_trainer_train_batch does, parameters untouched. NULL finish: single process. */
typedef void (*EsGradBucketFunc) (void *user, EsBackend *be, const float *grads,
                                  int64_t offset, int64_t count);
typedef bool (*EsGradFinishFunc) (void *user, EsBackend *be, float *grads, int64_t n,
                                  int64_t rows, EsError *err);
void        es_trainer_set_grad_reduce (EsTrainer *tr, EsGradBucketFunc bucket_ready,
                                        EsGradFinishFunc finish, void *user);
/* A loss that is not finite under a finish hook does not fail the batch at once (the
 * other processes would wait in the step's reductions): the step goes on through its
 * micro-batches and reductions with a NaN written into the first gradient float of
 * each layer handed to bucket_ready (or of the last layer with parameters, before
 * finish, without buckets). A sum holding a NaN is NaN, so after finish every process
 * reads that float of the reduced gradients (one float from device memory per step)
 * and, when it is not finite, fails the batch with ES_ERR_NUMERIC at the same step,
 * undone as a failed finish undoes it. es_trainer_numeric_was_own then tells whether
 * this process' own loss went bad (false: another's did, or the summed gradients
 * overflowed); without a finish hook, ES_ERR_NUMERIC is always this process' own. */
bool        es_trainer_numeric_was_own (const EsTrainer *tr);
/* Synchronized BatchNorm (data parallel). fn sums v (n doubles, host memory) in place
 * over the processes; each process calls it at the same points with the same n (a
 * collective). Set, training-mode BatchNorm normalizes each micro-batch with the
 * statistics of every process' rows, so N processes with B rows each train as one with
 * N x B: forward sums per channel the value count, the sum and the sum of squares (3 CH
 * values, from each process' own two-pass mean and deviations, in double), and the
 * running statistics are updated from the global ones (unbiased variance over the
 * global count); backward sums dout and dout * xhat (2 CH, each times this process'
 * batch rows, so that processes with different rows weigh right) for the input
 * gradient. Gamma's and beta's gradients stay this process' part (the gradient hook
 * reduces them). A process whose rows count for nothing in a step (a padding row) must
 * have fn add zeros for it. The backend's partial sums are downloaded and the results
 * uploaded, a few floats per BatchNorm layer, waiting for the device each time; the
 * device path (deferred statistics, graphs) is not taken. NULL: each process' own
 * statistics (the default). ES_ERR_UNSUPPORTED when the backend has no split
 * BatchNorm ops (es-backend.h); ES_ERR_NOMEM / ES_ERR_BUDGET for the scratch. */
typedef void (*EsStatReduceFunc) (void *user, double *v, int n);
bool        es_trainer_set_stat_reduce (EsTrainer *tr, EsStatReduceFunc fn, void *user,
                                        EsError *err);
/* Checkpoints: the optimizer's state, so that a run restored from one (parameters and
 * buffers through the model and es_trainer_reload, then this) continues bit for bit as
 * if it had not stopped. The state is the optimizer steps done (which also set the
 * scheduled learning rate and dropout's seeds) and es_trainer_state_slots vectors of
 * es_model_n_params floats: none for SGD, the velocity for momentum and Nesterov, the
 * first then the second moment for Adam and AdamW. Take it between optimizer steps:
 * set_state drops any accumulated gradients. slots is host memory (slots, P). */
int         es_trainer_state_slots  (const EsTrainer *tr);
/* Copy the model's buffers (BatchNorm running statistics) alone to the device, keeping
 * the gradients accumulated so far (data-parallel ranks take rank 0's). */
void        es_trainer_reload_buffers (EsTrainer *tr);
void        es_trainer_get_state    (EsTrainer *tr, int64_t *steps, float *slots);
bool        es_trainer_set_state    (EsTrainer *tr, int64_t steps, const float *slots,
                                     EsError *err);
/* Checkpoints: give QAT's layer its tracked input range back (lo <= hi, finite); false
 * when the layer is not fake-quantized. */
bool        es_trainer_set_input_range (EsTrainer *tr, int layer, float lo, float hi);

/* Where values went bad, after es_trainer_train_batch failed with ES_ERR_NUMERIC:
 * layer by layer from the first, the layer's parameters, then the output the last
 * training forward pass left (the failing micro-batch's rows), then its parameter
 * gradients. Returns the first layer (0-based) holding a NaN or an infinity, and in
 * *what (may be NULL) which of its values, or -1 (ES_NONFINITE_NONE) when all are
 * finite (the loss itself overflowed). Reads the device tensors back: call it once,
 * after a failure, not per step. */
typedef enum {
  ES_NONFINITE_NONE,
  ES_NONFINITE_PARAMS,
  ES_NONFINITE_ACTIVATIONS,
  ES_NONFINITE_GRADIENTS,
} EsNonfiniteKind;

int         es_trainer_find_nonfinite (EsTrainer *tr, EsNonfiniteKind *what);

/* Copy the device parameters and buffers back into the model. */
void        es_trainer_sync         (EsTrainer *tr);
/* Copy the model's parameters to the device (after the caller changed them) and
 * optionally reset the optimizer state. */
void        es_trainer_reload       (EsTrainer *tr, bool reset_optimizer);
void        es_trainer_set_lr       (EsTrainer *tr, float lr);

/* ---- resident data, deferred statistics, CUDA Graphs, uploads ahead ---------------
 * What makes small models fast on a GPU, where a step is a few microseconds of work
 * and launches, copies and waits for the host would cost more than the work.
 *
 * A resident dataset: inputs (uint8 or float) and labels or targets uploaded to the
 * backend once, charged to its budget as data; batches then name rows by index
 * (EsBatch.resident, .rows) and are gathered by the backend. Only on backends that
 * can gather (the CUDA backend): ES_ERR_UNSUPPORTED elsewhere, and the budget's
 * ES_ERR_BUDGET (or ES_ERR_NOMEM) when it does not fit, after which the caller streams
 * batches from host memory (es_trainer_prefetch). */
typedef struct EsResident EsResident;

EsResident *es_resident_new          (EsBackend *be, const uint8_t *x_u8, const float *x_f32,
                                      int64_t rows, int64_t D, const int32_t *labels,
                                      const float *targets, int64_t T, EsError *err);
void        es_resident_free         (EsResident *res);
int64_t     es_resident_rows         (const EsResident *res);

/* Deferred statistics (off by default). On, es_trainer_train_batch leaves its stats
 * argument alone and the loss and correct rows are added up where the step runs, read
 * back by es_trainer_read_stats only: on the CUDA backend, with the softmax
 * cross-entropy loss, no step waits for the device. A loss that is not finite is then
 * noticed at the reading: es_trainer_read_stats fails with ES_ERR_NUMERIC naming the
 * step, and from that batch on no update was applied (parameters and optimizer state
 * are those before it, es_trainer_step_count is put back to the steps applied;
 * BatchNorm's running statistics are not restored). Clipping by the global norm and
 * fp16's loss scaling are decided on the device too (the loss scale kept in device
 * memory: a step whose scaled gradients overflow is skipped there, the scale lowered,
 * and the host learns of it at the reading; es_trainer_loss_scale). Where the step
 * must wait anyway (other losses, QAT, distillation, a gradient-reduce hook,
 * profiling, backends without these ops) batches run as before, a bad loss failing
 * es_trainer_train_batch at once, and only the adding up is deferred. */
void        es_trainer_set_deferred_stats (EsTrainer *tr, bool on);
/* Adds what was counted since the last reading into *stats (may be NULL) and starts
 * counting afresh. Waits for the backend. */
bool        es_trainer_read_stats    (EsTrainer *tr, EsStepStats *stats, EsError *err);

/* CUDA Graphs (on by default; used only with deferred statistics on a backend that
 * records graphs): a training batch of B rows is recorded once, on the second batch
 * of that shape (the first one runs as usual and warms the workspaces), and replayed
 * after that; what changes from step to step (the scheduled learning rate, Adam's bias
 * corrections, Dropout's seeds, fp16's loss scale and whether the step is skipped) is
 * read from device memory the trainer fills ahead or the step itself writes, so a
 * replay gives the weights of an ordinary step bit for bit. Batches run as usual
 * instead when the batch has more rows than the micro-batch, accumulation is on, or
 * anything of the list above makes a step wait; a changed mask, batch source, batch
 * size or uint8 conversion records a new graph. es_trainer_graph_replays counts the
 * batches that ran as replays. */
void        es_trainer_set_graphs    (EsTrainer *tr, bool on);
int64_t     es_trainer_graph_replays (const EsTrainer *tr);

/* Streaming from host memory: start copying batch (host inputs and labels, at most
 * the micro-batch's rows) to the backend now, through pinned memory on a copy stream,
 * so it overlaps the batch running; the next es_trainer_train_batch given a batch with
 * the same pointers and rows takes the copy. Two batches may be staged. false and
 * ES_ERR_UNSUPPORTED on backends without asynchronous uploads (nothing is lost: the
 * batch then loads as usual). */
bool        es_trainer_prefetch      (EsTrainer *tr, const EsBatch *batch, EsError *err);

/* ---- profiling -------------------------------------------------------------------
 * Off by default, and then it costs one branch per layer. On, every training batch
 * (es_trainer_train_batch; evaluation and prediction are not timed) is timed stage by
 * stage and layer by layer with es_now, the backend synchronized before each reading
 * when it has a synchronize function. The readings are chained: each stage runs from
 * the end of the one before, so the stages of a batch add up to its total. */

typedef enum {
  ES_STAGE_LOAD,        /* batch rows copied (and uint8 converted) to the device; the
                         * state saved to undo a bad batch */
  ES_STAGE_FORWARD,     /* the layers, forward */
  ES_STAGE_LOSS,        /* loss forward and its gradient (a teacher's forward included) */
  ES_STAGE_METRICS,     /* correct predictions counted */
  ES_STAGE_BACKWARD,    /* the layers, backward */
  ES_STAGE_OPTIMIZER,   /* masks, clipping, regularization, the update */
  ES_N_STAGES
} EsStage;

const char *es_stage_name (EsStage stage);   /* "load", "forward", ... */

typedef struct {
  double  stage_s[ES_N_STAGES];  /* seconds per stage, summed over the timed batches */
  double  total_s;               /* seconds inside es_trainer_train_batch */
  int64_t batches, micro_batches, rows;
} EsProfile;

typedef struct {
  double  forward_s, backward_s;          /* summed */
  int64_t forward_flops, backward_flops;  /* summed: es_model_layer ()->flops per row
                                           * forward; backward 2x (1x where no input
                                           * gradient is needed), 0 where it did not run */
  int64_t forward_bytes, backward_bytes;  /* summed: the bytes the layer's kernels must
                                           * move at least, as es_layer_bytes_moved counts
                                           * them, 0 where it did not run */
} EsLayerProfile;

/* The bytes layer i of model moves at least in one pass over `rows` rows: every fp32
 * tensor it reads or writes once (forward: parameters, input, output, plus buffers it
 * keeps for backward such as a dropout mask or pooling indices; backward: parameters
 * read, their gradients read and written, the saved input and output read, the output
 * gradient read and the input gradient written when need_dinput). The traffic model of
 * the roofline: achieved bandwidth = these bytes over the measured time. */
int64_t     es_layer_bytes_moved         (const EsModel *model, int layer, int64_t rows,
                                          bool backward, bool need_dinput);

/* One timed interval, seconds on the es_now clock; layer -1 for a stage that is not a
 * layer's. Called on the training thread. */
typedef void (*EsProfileEventFunc) (void *user, EsStage stage, int layer, double t0, double t1);

/* Turn timing on or off; the counters are kept either way (es_trainer_profile_reset). */
void        es_trainer_set_profiling     (EsTrainer *tr, bool on);
bool        es_trainer_get_profiling     (const EsTrainer *tr);
void        es_trainer_profile_reset     (EsTrainer *tr);
void        es_trainer_get_profile       (const EsTrainer *tr, EsProfile *prof);
/* Layer i's counters (every layer of the model; a last layer fused into the loss keeps
 * zeros, its time counts in ES_STAGE_LOSS); false when i is out of range. */
bool        es_trainer_get_layer_profile (const EsTrainer *tr, int layer, EsLayerProfile *lp);
/* Also report every interval to func (NULL: none). */
void        es_trainer_set_profile_events (EsTrainer *tr, EsProfileEventFunc func, void *user);

/* Denormal (subnormal) fp32 values now held in the trainer's device tensors, read back
 * to the host (a full pass over them: call it between steps, not in a loop). */
typedef struct {
  int64_t params, gradients, optimizer, activations;   /* denormals counted */
  int64_t total_values;                                 /* values examined */
} EsDenormalCount;

void        es_trainer_count_denormals   (EsTrainer *tr, EsDenormalCount *out);

typedef struct EsInfer EsInfer;

/* Inference with up to max_batch rows; activations reuse two buffers. */
EsInfer     *es_infer_new           (const EsModel *model, EsBackend *be, int max_batch,
                                     EsError *err);
void         es_infer_free          (EsInfer *inf);
/* Run B rows of x (B, D) from host memory; returns the output (B, out) in host memory,
 * valid until the next call. */
const float *es_infer_run           (EsInfer *inf, const float *x, int B);

#ifdef __cplusplus
}
#endif
