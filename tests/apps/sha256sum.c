/*
 * sha256sum for nacre's file tests: hashes each file named on the command
 * line with its own SHA-256 (FIPS 180-4) and prints it the way coreutils
 * `sha256sum` does. Files are read with open(2) and read(2) in 64 KiB chunks,
 * so a large file crosses many chunk boundaries and a short read is handled.
 *
 * Build: gcc -static -O2 sha256sum.c -o sha256sum
 *    or: musl-gcc -static -O2 sha256sum.c -o sha256sum
 * Usage: sha256sum PATH...
 * Prints: one line "<64 lowercase hex digits>  <path>\n" per file, in argument
 * order. A file that cannot be opened or read gives
 * "sha256sum: <path>: <strerror(errno)>\n" on stderr; the other files are
 * still hashed and the exit code is 1. Exit code 0 when every file was hashed,
 * 2 without arguments.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_BYTES (64 * 1024)
#define BLOCK_BYTES 64

struct sha256 {
    uint32_t state[8];
    uint8_t block[BLOCK_BYTES];
    size_t block_len;
    uint64_t total_len;
};

/* FIPS 180-4 section 4.2.2: the first 32 bits of the fractional parts of the
 * cube roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4 section 5.3.3: the initial hash value H(0). */
static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

/* FIPS 180-4 section 6.2.2: one 512-bit block into the hash state. */
static void sha256_compress(uint32_t state[8], const uint8_t block[BLOCK_BYTES])
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }

    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; t++) {
        uint32_t big_s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + big_s1 + ch + K[t] + w[t];
        uint32_t big_s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = big_s0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

static void sha256_init(struct sha256 *ctx)
{
    memcpy(ctx->state, H0, sizeof(H0));
    ctx->block_len = 0;
    ctx->total_len = 0;
}

static void sha256_update(struct sha256 *ctx, const uint8_t *data, size_t len)
{
    ctx->total_len += len;
    while (len > 0) {
        size_t take = BLOCK_BYTES - ctx->block_len;
        if (take > len)
            take = len;
        memcpy(ctx->block + ctx->block_len, data, take);
        ctx->block_len += take;
        data += take;
        len -= take;
        if (ctx->block_len == BLOCK_BYTES) {
            sha256_compress(ctx->state, ctx->block);
            ctx->block_len = 0;
        }
    }
}

/* FIPS 180-4 section 5.1.1: a 1 bit, zeros, then the length in bits as a
 * 64-bit big-endian number, ending on a block boundary. */
static void sha256_final(struct sha256 *ctx, uint8_t digest[32])
{
    uint64_t bit_len = ctx->total_len * 8;
    ctx->block[ctx->block_len++] = 0x80;
    if (ctx->block_len > BLOCK_BYTES - 8) {
        memset(ctx->block + ctx->block_len, 0, BLOCK_BYTES - ctx->block_len);
        sha256_compress(ctx->state, ctx->block);
        ctx->block_len = 0;
    }
    memset(ctx->block + ctx->block_len, 0, BLOCK_BYTES - 8 - ctx->block_len);
    for (int i = 0; i < 8; i++)
        ctx->block[BLOCK_BYTES - 1 - i] = (uint8_t)(bit_len >> (8 * i));
    sha256_compress(ctx->state, ctx->block);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->state[i];
    }
}

static uint8_t chunk[CHUNK_BYTES];

/* Hashes one file; returns 0, or an errno value after closing the file. */
static int hash_file(const char *path, uint8_t digest[32])
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno;

    struct sha256 ctx;
    sha256_init(&ctx);
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            return err;
        }
        if (n == 0)
            break;
        sha256_update(&ctx, chunk, (size_t)n);
    }
    close(fd);
    sha256_final(&ctx, digest);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sha256sum PATH...\n");
        return 2;
    }

    int status = 0;
    for (int i = 1; i < argc; i++) {
        uint8_t digest[32];
        int err = hash_file(argv[i], digest);
        if (err != 0) {
            fflush(stdout);
            fprintf(stderr, "sha256sum: %s: %s\n", argv[i], strerror(err));
            status = 1;
            continue;
        }
        for (int b = 0; b < 32; b++)
            printf("%02x", digest[b]);
        printf("  %s\n", argv[i]);
    }
    if (fflush(stdout) != 0)
        return 1;
    return status;
}
