#include <stdio.h>

int main(void)
{
    fprintf(stderr, "smtp-oauth-proxy: under construction\n");
    return 1;
}
