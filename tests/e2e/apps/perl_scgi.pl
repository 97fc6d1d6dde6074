#!/usr/bin/perl
# An SCGI server on Debian's SCGI.pm (libscgi-perl): answers with the variables it got.
use strict;
use warnings;
use SCGI;
use IO::Socket::INET;

my $port = shift or die "usage: perl_scgi.pl PORT\n";
my $socket = IO::Socket::INET->new(Listen => 16, ReuseAddr => 1, LocalAddr => "127.0.0.1:$port")
  or die "listen: $!";
my $scgi = SCGI->new($socket, blocking => 1);
while (my $request = $scgi->accept) {
  # A connection that closes without a request (a port probe) must not end the server.
  next unless eval { $request->read_env; 1 };
  my $env = $request->env;
  my $len = $env->{CONTENT_LENGTH} || 0;
  my $body = '';
  read($request->connection, $body, $len) if $len;
  my $out = join('', map { "$_=$env->{$_}\n" } sort keys %$env) . "BODY=$body";
  $request->connection->print("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n$out");
  $request->close;
}
