/* The CPU baseline: llama2.c's fp32 forward pass, written for this project's benchmark.
 *
 *   cpu_forward MODEL.bin TOKENS.txt REPEATS [LOGITS.f32]
 *
 * MODEL.bin is a legacy llama2.c checkpoint (7 int32 header, fp32 tensors; a negative vocab size
 * means an unshared classifier). The whitespace-separated token ids in TOKENS.txt are fed at
 * positions 0, 1, ... (teacher forcing), the whole sequence REPEATS times; the best pass counts.
 * LOGITS.f32, if given, receives the logits of every position from one more, untimed pass
 * (positions x vocab float32). One JSON line on stdout: positions, seconds of the best pass, tokens_per_s, threads.
 *
 * One thread on purpose (no OpenMP): the figure is what one core does. The matmul keeps eight
 * partial sums so that -O3 -march=native vectorises it without -ffast-math changing the rest. */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int dim;          /* transformer width */
    int hidden_dim;   /* FFN width */
    int n_layers;
    int n_heads;
    int n_kv_heads;   /* < n_heads: grouped-query attention */
    int vocab_size;
    int seq_len;
} Config;

typedef struct {
    float *token_embedding;   /* (vocab, dim) */
    float *rms_att;           /* (layer, dim) */
    float *wq;                /* (layer, dim, dim) */
    float *wk;                /* (layer, kv_dim, dim) */
    float *wv;                /* (layer, kv_dim, dim) */
    float *wo;                /* (layer, dim, dim) */
    float *rms_ffn;           /* (layer, dim) */
    float *w1;                /* (layer, hidden, dim) */
    float *w2;                /* (layer, dim, hidden) */
    float *w3;                /* (layer, hidden, dim) */
    float *rms_final;         /* (dim,) */
    float *wcls;              /* (vocab, dim) */
} Weights;

typedef struct {
    float *x;            /* (dim,) residual stream */
    float *xb;           /* (dim,) */
    float *xb2;          /* (dim,) */
    float *q;            /* (dim,) */
    float *hb;           /* (hidden,) */
    float *hb2;          /* (hidden,) */
    float *att;          /* (seq_len,) scores of one head */
    float *logits;       /* (vocab,) */
    float *key_cache;    /* (layer, seq_len, kv_dim) */
    float *value_cache;  /* (layer, seq_len, kv_dim) */
} RunState;

static void die(const char *msg, const char *what) {
    fprintf(stderr, "cpu_forward: %s%s\n", msg, what ? what : "");
    exit(1);
}

static float *take(float **cursor, long n) {
    float *p = *cursor;
    *cursor += n;
    return p;
}

static float *load(const char *path, Config *c, Weights *w) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open ", path);
    if (fread(c, sizeof(int), 7, f) != 7) die("short header in ", path);
    int shared = c->vocab_size > 0;
    c->vocab_size = abs(c->vocab_size);
    if (c->dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->dim % c->n_heads
        || c->n_heads % c->n_kv_heads || c->seq_len <= 0)
        die("bad header in ", path);
    long d = c->dim, h = c->hidden_dim, L = c->n_layers, V = c->vocab_size, S = c->seq_len;
    long kv = d / c->n_heads * c->n_kv_heads, hs = d / c->n_heads;
    long floats = V * d + L * (2 * d + 2 * d * d + 2 * kv * d + 3 * h * d) + d + S * hs + (shared ? 0 : V * d);
    float *data = malloc(floats * sizeof(float));
    if (!data) die("out of memory for ", path);
    if ((long)fread(data, sizeof(float), floats, f) != floats) die("truncated weights in ", path);
    fclose(f);
    float *p = data;
    w->token_embedding = take(&p, V * d);
    w->rms_att = take(&p, L * d);
    w->wq = take(&p, L * d * d);
    w->wk = take(&p, L * kv * d);
    w->wv = take(&p, L * kv * d);
    w->wo = take(&p, L * d * d);
    w->rms_ffn = take(&p, L * d);
    w->w1 = take(&p, L * h * d);
    w->w2 = take(&p, L * d * h);
    w->w3 = take(&p, L * h * d);
    w->rms_final = take(&p, d);
    take(&p, S * hs);    /* freq_cis_real, freq_cis_imag: RoPE is recomputed */
    w->wcls = shared ? w->token_embedding : p;
    return data;
}

/* Kernels ---------------------------------------------------------------------------------------- */

static void rmsnorm(float *o, const float *x, const float *weight, int n) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / sqrtf(ss / n + 1e-5f);
    for (int i = 0; i < n; i++) o[i] = weight[i] * (ss * x[i]);
}

static void softmax(float *x, int n) {
    float max = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* out (d,) = W (d, n) @ x (n,) */
static void matmul(float *out, const float *x, const float *W, int n, int d) {
    for (int i = 0; i < d; i++) {
        const float *row = W + (long)i * n;
        float acc[8] = {0};
        int j = 0;
        for (; j + 8 <= n; j += 8)
            for (int k = 0; k < 8; k++) acc[k] += row[j + k] * x[j + k];
        float sum = 0.0f;
        for (; j < n; j++) sum += row[j] * x[j];
        for (int k = 0; k < 8; k++) sum += acc[k];
        out[i] = sum;
    }
}

/* Rotate pairs of vec (n values, heads of head_size) by pos times llama2.c's frequencies. */
static void rope(float *vec, int n, int head_size, int pos) {
    for (int i = 0; i < n; i += 2) {
        float freq = 1.0f / powf(10000.0f, (float)(i % head_size) / (float)head_size);
        float val = pos * freq, fcr = cosf(val), fci = sinf(val);
        float v0 = vec[i], v1 = vec[i + 1];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + 1] = v0 * fci + v1 * fcr;
    }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

/* Forward ---------------------------------------------------------------------------------------- */

static float *forward(const Config *c, const Weights *w, RunState *s, int token, int pos) {
    int dim = c->dim, hidden = c->hidden_dim, hs = dim / c->n_heads;
    int kv_dim = hs * c->n_kv_heads, kv_mul = c->n_heads / c->n_kv_heads;
    float *x = s->x;
    memcpy(x, w->token_embedding + (long)token * dim, dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        long kv_layer = (long)l * c->seq_len * kv_dim;
        float *k = s->key_cache + kv_layer + (long)pos * kv_dim;     /* this position's rows */
        float *v = s->value_cache + kv_layer + (long)pos * kv_dim;
        // attention rmsnorm, then q, k, v straight into the cache
        rmsnorm(s->xb, x, w->rms_att + l * dim, dim);
        matmul(s->q, s->xb, w->wq + (long)l * dim * dim, dim, dim);
        matmul(k, s->xb, w->wk + (long)l * kv_dim * dim, dim, kv_dim);
        matmul(v, s->xb, w->wv + (long)l * kv_dim * dim, dim, kv_dim);
        rope(s->q, dim, hs, pos);
        rope(k, kv_dim, hs, pos);
        // attention per head over positions 0..pos; query heads share a KV head (GQA)
        for (int h = 0; h < c->n_heads; h++) {
            const float *qh = s->q + h * hs;
            long kv_off = kv_layer + (long)(h / kv_mul) * hs;
            for (int t = 0; t <= pos; t++) {
                const float *kt = s->key_cache + kv_off + (long)t * kv_dim;
                float score = 0.0f;
                for (int i = 0; i < hs; i++) score += qh[i] * kt[i];
                s->att[t] = score / sqrtf((float)hs);
            }
            softmax(s->att, pos + 1);
            float *out = s->xb + h * hs;
            memset(out, 0, hs * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float *vt = s->value_cache + kv_off + (long)t * kv_dim;
                for (int i = 0; i < hs; i++) out[i] += s->att[t] * vt[i];
            }
        }
        // output projection and residual
        matmul(s->xb2, s->xb, w->wo + (long)l * dim * dim, dim, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];
        // FFN: w2(silu(w1 x) * w3 x) and residual
        rmsnorm(s->xb, x, w->rms_ffn + l * dim, dim);
        matmul(s->hb, s->xb, w->w1 + (long)l * hidden * dim, dim, hidden);
        matmul(s->hb2, s->xb, w->w3 + (long)l * hidden * dim, dim, hidden);
        for (int i = 0; i < hidden; i++) s->hb[i] = silu(s->hb[i]) * s->hb2[i];
        matmul(s->xb, s->hb, w->w2 + (long)l * dim * hidden, hidden, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb[i];
    }
    rmsnorm(x, x, w->rms_final, dim);
    matmul(s->logits, x, w->wcls, dim, c->vocab_size);
    return s->logits;
}

static float *zeros(long n) {
    float *p = calloc(n, sizeof(float));
    if (!p) die("out of memory", NULL);
    return p;
}

static int *read_tokens(const char *path, const Config *c, int *count) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open ", path);
    int *tokens = malloc(c->seq_len * sizeof(int)), t;
    *count = 0;
    while (fscanf(f, "%d", &t) == 1) {
        if (*count == c->seq_len) die("more tokens than the context in ", path);
        if (t < 0 || t >= c->vocab_size) die("token outside the vocabulary in ", path);
        tokens[(*count)++] = t;
    }
    fclose(f);
    if (!*count) die("no tokens in ", path);
    return tokens;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) die("usage: cpu_forward MODEL.bin TOKENS.txt REPEATS [LOGITS.f32]", NULL);
    Config c;
    Weights w;
    float *data = load(argv[1], &c, &w);
    int n, repeats = atoi(argv[3]);
    int *tokens = read_tokens(argv[2], &c, &n);
    long kv_dim = (long)c.dim / c.n_heads * c.n_kv_heads;
    RunState s = {zeros(c.dim), zeros(c.dim), zeros(c.dim), zeros(c.dim), zeros(c.hidden_dim),
                  zeros(c.hidden_dim), zeros(c.seq_len), zeros(c.vocab_size),
                  zeros((long)c.n_layers * c.seq_len * kv_dim), zeros((long)c.n_layers * c.seq_len * kv_dim)};
    FILE *out = argc == 5 ? fopen(argv[4], "wb") : NULL;
    if (argc == 5 && !out) die("cannot write ", argv[4]);
    double best = 1e30;
    for (int r = 0; r < (repeats > 0 ? repeats : 1); r++) {
        double t0 = now();
        for (int pos = 0; pos < n; pos++) forward(&c, &w, &s, tokens[pos], pos);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    for (int pos = 0; out && pos < n; pos++)    /* an untimed pass for the logits */
        fwrite(forward(&c, &w, &s, tokens[pos], pos), sizeof(float), c.vocab_size, out);
    if (out) fclose(out);
    printf("{\"positions\": %d, \"seconds\": %.6f, \"tokens_per_s\": %.2f, \"threads\": 1}\n", n, best, n / best);
    free(data);
    return 0;
}
