// Options.cs: the command line's options, parsed.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Net;

namespace ToolCall;

sealed class Options
{
    public string? Question { get; private set; }
    public string? BaseUrl { get; private set; }
    public string? Model { get; private set; }
    public string? Replay { get; private set; }
    public string? Record { get; private set; }
    public bool Trace { get; private set; }
    public int MaxRounds { get; private set; } = 8;
    public int? MaxTokens { get; private set; }
    public string? ToolChoice { get; private set; }
    public bool NoParallel { get; private set; }
    public bool Strict { get; private set; }
    public bool NoStore { get; private set; }
    public int? Thinking { get; private set; }
    public bool Stream { get; private set; }
    public int Retries { get; private set; } = 2;
    public int TimeoutSeconds { get; private set; } = 60;
    public int MaxResponseMegabytes { get; private set; } = 64;
    public int ToolTimeoutSeconds { get; private set; } = 30;
    public int MaxResultChars { get; private set; } = 20_000;
    public bool ParallelTools { get; private set; }
    public bool Confirm { get; private set; }
    public List<string> Mcp { get; } = [];
    public bool Diagram { get; private set; }
    public bool Help { get; private set; }
    public string? ServeCassette { get; private set; }
    public Api Api { get; private set; } = Api.All[0];
    public int Port { get; private set; }
    public IPAddress Host { get; private set; } = IPAddress.Loopback;

    public static Options Parse(string[] args)
    {
        var options = new Options();
        var words = new List<string>();
        bool serve = args.Length > 0 && args[0] == "serve";
        for (int i = serve ? 1 : 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? inlineValue = null;
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=') is int equals and > 2)
                (arg, inlineValue) = (arg[..equals], arg[(equals + 1)..]);
            string Value() => inlineValue ?? (i + 1 < args.Length ? args[++i] : throw new UsageException($"{arg} needs a value."));

            switch (arg)
            {
                case "-h" or "--help": options.Help = true; break;
                case "--base-url" when !serve: options.BaseUrl = Value(); break;
                case "--model" when !serve: options.Model = Value(); break;
                case "--replay" when !serve: options.Replay = Value(); break;
                case "--record" when !serve: options.Record = Value(); break;
                case "--trace" when !serve: options.Trace = true; break;
                case "--max-rounds" when !serve: options.MaxRounds = WholeNumber(arg, Value(), min: 1, max: 1000); break;
                case "--max-tokens" when !serve: options.MaxTokens = WholeNumber(arg, Value(), min: 1, max: 1_000_000); break;
                case "--tool-choice" when !serve: options.ToolChoice = Value(); break;
                case "--no-parallel" when !serve: options.NoParallel = true; break;
                case "--strict" when !serve: options.Strict = true; break;
                case "--no-store" when !serve: options.NoStore = true; break;
                case "--thinking" when !serve: options.Thinking = WholeNumber(arg, Value(), min: 1, max: 1_000_000); break;
                case "--stream" when !serve: options.Stream = true; break;
                case "--api" when !serve: options.Api = Api.Named(Value()); break;
                case "--retries" when !serve: options.Retries = WholeNumber(arg, Value(), min: 0, max: 10); break;
                case "--timeout" when !serve: options.TimeoutSeconds = WholeNumber(arg, Value(), min: 1, max: 3600); break;
                case "--max-response-mb" when !serve: options.MaxResponseMegabytes = WholeNumber(arg, Value(), min: 1, max: 4096); break;
                case "--tool-timeout" when !serve: options.ToolTimeoutSeconds = WholeNumber(arg, Value(), min: 1, max: 3600); break;
                case "--max-result-chars" when !serve: options.MaxResultChars = WholeNumber(arg, Value(), min: 100, max: 10_000_000); break;
                case "--parallel-tools" when !serve: options.ParallelTools = true; break;
                case "--confirm" when !serve: options.Confirm = true; break;
                case "--mcp" when !serve: options.Mcp.Add(Value()); break;
                case "--diagram" when !serve: options.Diagram = true; break;
                case "--port" when serve: options.Port = WholeNumber(arg, Value(), min: 0, max: 65535); break;
                case "--host" when serve: options.Host = Address(arg, Value()); break;
                case "--port" or "--host":
                    throw new UsageException($"{arg} is for serve: ./run.sh serve CASSETTE {arg} ….");
                case "--api-key" or "--key":
                    throw new UsageException(
                        "the API key is read only from the OPENAI_API_KEY environment variable (ANTHROPIC_API_KEY for --api anthropic), " +
                        "never from the command line, where other users can see it (ps). Set the variable instead.");
                case "--":
                    words.AddRange(args[(i + 1)..]);
                    i = args.Length;
                    break;
                default:
                    if (arg.Length > 1 && arg[0] == '-')
                        throw new UsageException($"unknown option '{arg}'{(serve ? " for serve" : "")}. Run with --help to see the options.");
                    words.Add(arg);
                    break;
            }
        }

        if (serve)
        {
            if (options.Help)
                return options;
            if (words.Count != 1)
                throw new UsageException("serve needs exactly one cassette: serve CASSETTE [--port N] [--host ADDRESS].");
            options.ServeCassette = words[0];
        }
        else if (words.Count > 0)
        {
            options.Question = string.Join(' ', words); // ./run.sh What is the weather in Paris
        }
        return options;
    }

    static int WholeNumber(string option, string text, int min, int max) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min && n <= max
            ? n
            : throw new UsageException($"{option} needs a whole number from {min} to {max}, not '{text}'.");

    static IPAddress Address(string option, string text) =>
        text == "localhost" ? IPAddress.Loopback
        : IPAddress.TryParse(text, out IPAddress? address) ? address
        : throw new UsageException($"{option} needs an IP address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface), not '{text}'.");
}
