/*
 * User and group lookups, for nacre's tests: what getpwuid, getgrgid and
 * getpwnam find in the user and group databases (/etc/passwd, /etc/group).
 *
 * Build: gcc -static -O2 users.c -o users   (or musl-gcc -static -O2)
 * Usage: users
 * Prints: "<user name of getuid()> <group name of getgid()>" ("(none)" for a
 * lookup that finds nothing), then "nobody <uid of the user nobody, or -1>".
 * Exit code 0.
 */
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    struct passwd *user = getpwuid(getuid());
    struct group *group = getgrgid(getgid());
    printf("%s %s\n", user ? user->pw_name : "(none)", group ? group->gr_name : "(none)");
    struct passwd *nobody = getpwnam("nobody");
    printf("nobody %d\n", nobody ? (int)nobody->pw_uid : -1);
    return 0;
}
