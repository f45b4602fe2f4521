#!/usr/bin/perl
# Verify every DKIM signature of the message on stdin with Perl's Mail::DKIM
# (Debian: libmail-dkim-perl); the public keys are the arguments
# (selector._domainkey.domain=record), not DNS. Prints one line a signature:
# its algorithm, result and detail.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my %records = map { split /=/, $_, 2 } @ARGV;
{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($name, $type) = @_;
        my $record = $records{lc $name};
        $@ = 'NXDOMAIN', return () unless defined $record;
        return (Net::DNS::RR->new(name => $name, type => 'TXT', txtdata => $record));
    };
}
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (<STDIN>) {
    s/\015?\012$/\015\012/;
    $dkim->PRINT($_);
}
$dkim->CLOSE;
foreach my $signature ($dkim->signatures) {
    printf "%s %s %s\n", $signature->algorithm, $signature->result, $signature->result_detail;
}
