// Greedy decoding through libllama that prints, per step, the chosen token and a hash of the
// whole logits row, so our CPU backend can be compared with llama.cpp bit for bit (issue 4,
// tests/fixtures/smollm2/logits.json). Optionally dumps named graph tensors of the first
// decode call (the prompt) as raw f32 for layer-by-layer comparison.
//
//   llama_logits MODEL N_PREDICT PROMPT_FILE [-- DUMP_DIR NAME...]
//
// The prompt is tokenized by llama.cpp (special tokens parsed, BOS as the model says) and its
// ids printed first (`ids 1 2 3`); then one line per step: step, argmax, FNV-1a 64 of the
// logits row's bytes, the top logit (%a), the runner-up's id and logit.
// The context is the one tests/fixtures/smollm2/README.md describes: F32 K/V cache, no flash
// attention, 2 threads, one batch for the prompt. LORA=FILE attaches a LoRA adapter at scale 1
// (llama.cpp's `--lora FILE`).
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static std::vector<std::string> g_dump_names;
static std::string g_dump_dir;
static int g_calls = 0;

static bool dump_cb(struct ggml_tensor * t, bool ask, void *) {
    static const int dump_call = getenv("DUMP_CALL") ? atoi(getenv("DUMP_CALL")) : 0;
    if (g_calls != dump_call) return false;
    bool wanted = false;
    for (auto & n : g_dump_names) if (n == t->name) wanted = true;
    if (ask) return wanted;
    if (!wanted || t->type != GGML_TYPE_F32) return true;
    std::vector<float> buf(ggml_nelements(t));
    // Views may be strided; the tensors we dump are contiguous outputs of ops.
    ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
    // A name can label two tensors (Qcur before and after RoPE): the op tells them apart.
    std::string path = g_dump_dir + "/" + t->name + "." + ggml_op_desc(t) + ".f32";
    FILE * f = fopen(path.c_str(), "wb");
    fwrite(buf.data(), 4, buf.size(), f);
    fclose(f);
    fprintf(stderr, "dumped %s %s [%lld %lld %lld %lld]\n", t->name, ggml_op_desc(t), (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3]);
    return true;
}

static unsigned long long fnv(const float * x, int n) {
    unsigned long long h = 14695981039346656037ULL; // FNV-1a 64 offset basis
    const unsigned char * p = (const unsigned char *) x;
    for (size_t i = 0; i < (size_t) n * 4; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}

int main(int argc, char ** argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s MODEL N_PREDICT PROMPT_FILE [-- DUMP_DIR NAME...]\n", argv[0]); return 2; }
    const char * model_path = argv[1];
    int n_predict = atoi(argv[2]);
    std::string text;
    {
        FILE * f = fopen(argv[3], "rb");
        if (!f) { fprintf(stderr, "cannot read %s\n", argv[3]); return 1; }
        char buf[4096];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, got);
        fclose(f);
    }
    int i = 4;
    if (i < argc && strcmp(argv[i], "--") == 0) {
        g_dump_dir = argv[i + 1];
        for (int j = i + 2; j < argc; j++) g_dump_names.push_back(argv[j]);
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    if (!g_dump_names.empty()) { cp.cb_eval = dump_cb; cp.cb_eval_user_data = nullptr; }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (const char * lora = getenv("LORA")) {
        llama_adapter_lora * adapter = llama_adapter_lora_init(model, lora);
        if (!adapter) { fprintf(stderr, "cannot load adapter %s\n", lora); return 1; }
        float scale = 1.0f;
        if (llama_set_adapters_lora(ctx, &adapter, 1, &scale) != 0) { fprintf(stderr, "cannot attach %s\n", lora); return 1; }
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> prompt(text.size() + 8);
    int n = llama_tokenize(vocab, text.data(), (int) text.size(), prompt.data(), (int) prompt.size(), true, true);
    if (n < 0) { fprintf(stderr, "tokenize failed\n"); return 1; }
    prompt.resize(n);
    printf("ids");
    for (llama_token t : prompt) printf(" %d", t);
    printf("\n");
    std::vector<llama_token> cur = prompt;
    for (int step = 0; step < n_predict; step++) {
        llama_batch b = llama_batch_get_one(cur.data(), (int) cur.size());
        if (llama_decode(ctx, b) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
        g_calls++;
        const float * lg = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++) if (lg[v] > lg[best]) best = v;
        int second = best == 0 ? 1 : 0;
        for (int v = 0; v < n_vocab; v++) if (v != best && lg[v] > lg[second]) second = v;
        printf("%d %d %016llx %a %d %a\n", step, best, fnv(lg, n_vocab), lg[best], second, lg[second]);
        cur.assign(1, best);
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
