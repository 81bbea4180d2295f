"""TwiML taken apart (proxy/fronts/twilio/twiml.py): pure, no I/O."""

from __future__ import annotations

import pytest

from proxy.fronts.twilio import twiml


def targets(text: str) -> list[tuple[int, str, str, str, str | None]]:
    return [(t.block, t.kind, t.element, t.value, t.caller_id)
            for t in twiml.parse(text).targets]


def test_dial_targets_with_their_caller_id() -> None:
    assert targets(
        '<Response><Dial callerId="+31201234567">+31612345678</Dial>'
        "<Dial><Number>0612345679</Number><Client>agent</Client><Queue>q</Queue>"
        "<Conference>room</Conference><Sim>DE1</Sim><Sip>sip:x@y</Sip>"
        "<Application>AP1</Application><WhatsApp>+316</WhatsApp></Dial></Response>") == [
        (0, "number", "Dial", "+31612345678", "+31201234567"),
        (1, "number", "Number", "0612345679", None),
        (1, "agent", "Client", "", None), (1, "agent", "Queue", "", None),
        (1, "agent", "Conference", "", None), (1, "agent", "Sim", "", None),
        (1, "sip", "Sip", "", None), (1, "application", "Application", "", None),
        (1, "unknown", "WhatsApp", "", None),
    ]


def test_what_hides_or_escapes_inspection() -> None:
    # Text between nouns still reaches Twilio; a Dial nested in a Gather is found; <Refer>
    # to SIP, an SMS from a call and an element that is not TwiML cannot be decided.
    assert targets(
        "<Response><Dial><Client>a</Client>+31612345678</Dial>"
        "<Gather><DIAL>+31612345679</DIAL></Gather>"
        "<Refer><Sip>sip:+31612345670@carrier</Sip></Refer>"
        '<Sms to="+31612345671">Hoi</Sms><Teleport>+316</Teleport>'
        "<Say><speak>Dial <w>+316</w></speak></Say></Response>") == [
        (0, "agent", "Client", "", None), (0, "number", "Dial", "+31612345678", None),
        (1, "number", "DIAL", "+31612345679", None), (2, "sip", "Sip", "", None),
        (3, "unknown", "Sms", "", None), (4, "unknown", "Teleport", "", None),
    ]


@pytest.mark.parametrize("text", [
    "", "plain text", "<Response>", "<Say>hi</Say>", '<?xml version="1.0"?><Responses/>',
    '<!DOCTYPE Response [<!ENTITY a "b">]><Response>&a;</Response>',
    '<Response xmlns="urn:x"><Dial>+31612345678</Dial></Response>',
    '<Response><x:Dial xmlns:x="urn:x">+31612345678</x:Dial></Response>',
    "<Response>" + "<Pause/>" * 20_000 + "</Response>",
])
def test_what_is_not_twiml(text: str) -> None:
    with pytest.raises(twiml.MalformedTwiml):
        twiml.parse(text)


def test_urls_and_their_methods_resolve_against_the_document() -> None:
    doc = twiml.parse(
        '<Response><Gather action="next" method="get"><Say>Kies</Say></Gather>'
        '<Record action="/rec" recordingStatusCallback="https://cb.example/rec" '
        'recordingStatusCallbackMethod="GET" transcribeCallback="tr"/>'
        '<Dial action="after" referUrl="refer"><Number url="whisper" '
        'statusCallback="st">+31612345678</Number></Dial>'
        "<Redirect>../again</Redirect><Play>hold.mp3</Play>"
        '<Dial><Conference waitUrl="wait.xml" statusCallback="conf">r</Conference></Dial>'
        '<Connect><VirtualAgent statusCallback="va"/></Connect><Connect><Conversation '
        'url="conv" statusCallback="cs" recordingStatusCallback="rc"/></Connect></Response>')
    base = "https://dialer.example/ivr/start?c=1"
    assert [(s.kind, s.field, s.url, s.method) for s in twiml.urls(doc, base=base)] == [
        ("twiml", "Gather.action", "https://dialer.example/ivr/next", "GET"),
        ("twiml", "Record.action", "https://dialer.example/rec", "POST"),
        ("callback", "Record.recordingStatusCallback", "https://cb.example/rec", "GET"),
        ("callback", "Record.transcribeCallback", "https://dialer.example/ivr/tr", "POST"),
        ("twiml", "Dial.action", "https://dialer.example/ivr/after", "POST"),
        ("twiml", "Dial.referUrl", "https://dialer.example/ivr/refer", "POST"),
        ("twiml", "Number.url", "https://dialer.example/ivr/whisper", "POST"),
        ("callback", "Number.statusCallback", "https://dialer.example/ivr/st", "POST"),
        ("twiml", "Redirect", "https://dialer.example/again", "POST"),
        ("callback", "Conference.statusCallback", "https://dialer.example/ivr/conf", "POST"),
        ("callback", "VirtualAgent.statusCallback", "https://dialer.example/ivr/va", "POST"),
        ("twiml", "Conversation.url", "https://dialer.example/ivr/conv", "POST"),
        ("callback", "Conversation.statusCallback", "https://dialer.example/ivr/cs", "POST"),
        ("callback", "Conversation.recordingStatusCallback",
         "https://dialer.example/ivr/rc", "POST"),
    ]
    # An empty URL is no URL: Twilio's default applies.
    assert [s.field for s in twiml.urls(twiml.parse(
        '<Response><Redirect> </Redirect><Gather action=""/><Dial action="https://d.example/a"'
        ">+31612345678</Dial></Response>"))] == ["Dial.action"]


@pytest.mark.parametrize("url", [
    "next", "/next", "//d.example/next", "\ufeffhttps://d.example/n", "\u200bhttps://d.example/n",
    "ftp://d.example/x", "https:///x", "javascript:alert(1)", "http://[::1/x"])
def test_an_inline_url_that_is_not_absolute_http_is_refused(url: str) -> None:
    # Inline TwiML has no document URL: left as written, Twilio might resolve or clean the URL
    # up and fetch TwiML nothing decided (fail closed).
    for element, field in ((f"<Redirect>{url}</Redirect>", "Redirect"),
                           (f'<Gather action="{url}"/>', "Gather.action"),
                           (f'<Dial><Number statusCallback="{url}">+31612345678</Number></Dial>',
                            "Number.statusCallback")):
        doc = twiml.parse(f"<Response>{element}</Response>")
        with pytest.raises(twiml.MalformedTwiml, match=rf"TwiML's {field} must be an absolute"):
            twiml.urls(doc)


@pytest.mark.parametrize("url", ["ftp://d.example/x", "javascript:alert(1)", "mailto:a@b"])
def test_a_fetched_url_that_cannot_be_relayed_is_refused(url: str) -> None:
    doc = twiml.parse(f"<Response><Redirect>{url}</Redirect></Response>")
    with pytest.raises(twiml.MalformedTwiml, match="Redirect must be an absolute"):
        twiml.urls(doc, base="https://dialer.example/ivr/start")


def test_say_holds_ssml_only() -> None:
    assert targets(
        '<Response><Say voice="Polly.Lotte">Hallo <break time="1s"/><prosody rate="slow">'
        '<say-as interpret-as="digits">12</say-as><emphasis>nu</emphasis></prosody><p><s>'
        '<w>dag</w><sub alias="x">y</sub><lang xml:lang="nl-NL">z</lang><phoneme ph="a">b'
        "</phoneme></s></p></Say></Response>") == []
    # Anything else in <Say> cannot be inspected: the whole <Say> is the block refused.
    text = ("<Response><Say>Hallo<Dial>+31612345678</Dial></Say>"
            "<Say><p><Number>+31612345679</Number></p></Say><Say>ok</Say></Response>")
    assert targets(text) == [(0, "unknown", "Dial", "", None),
                             (1, "unknown", "Number", "", None)]
    refusal = f'<Say language="nl-NL">{twiml.REFUSAL}</Say><Hangup />'
    assert twiml.render(twiml.parse(text), {0, 1}) == (
        twiml.DECLARATION + f"<Response>{refusal}{refusal}<Say>ok</Say></Response>")


def test_render_replaces_refused_blocks_and_urls() -> None:
    doc = twiml.parse(
        '<Response><Dial action="https://d.example/a">+31612345678</Dial>'
        '<Dial><Number url="https://d.example/w">+31612345679</Number></Dial>'
        "<Play>hold.mp3</Play><Redirect>next</Redirect></Response>")
    base = "https://d.example/ivr/"
    blocked = {1}
    slots = twiml.urls(doc, blocked, base)
    assert [s.field for s in slots] == ["Dial.action", "Redirect"]  # not the refused block's
    text = twiml.render(doc, blocked, ["R1", "R2"], base)
    assert text == (
        twiml.DECLARATION + '<Response><Dial action="R1">+31612345678</Dial>'
        f'<Say language="nl-NL">{twiml.REFUSAL}</Say><Hangup />'
        "<Play>https://d.example/ivr/hold.mp3</Play><Redirect>R2</Redirect></Response>")
    with pytest.raises(ValueError, match="one new URL"):
        twiml.render(twiml.parse("<Response><Redirect>https://x/</Redirect></Response>"))
