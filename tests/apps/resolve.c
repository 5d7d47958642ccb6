/*
 * Resolve each name given with getaddrinfo (IPv4), as servers and clients do, and
 * print one line per name: "NAME ADDRESS" or "NAME error: MESSAGE". The resolver
 * reads /etc/hosts and /etc/resolv.conf (nacre package --dns writes the latter).
 *
 * Build: gcc -static -O2 resolve.c -o resolve (or musl-gcc)
 * Usage: resolve NAME...    exits 0
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        int e = getaddrinfo(argv[i], NULL, &hints, &res);
        if (e != 0) {
            printf("%s error: %s\n", argv[i], e == EAI_SYSTEM ? "system error" : "not resolved");
            continue;
        }
        char text[INET_ADDRSTRLEN];
        struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
        printf("%s %s\n", argv[i], text);
        freeaddrinfo(res);
    }
    fflush(stdout);
    return 0;
}
