"""Texts the spoof systems read, chosen to match what the bona fide recordings say.

The English bona fide side is mostly Asterisk IVR prompts, so English spoof texts are drawn from
the same prompt transcripts (``core-sounds-en.txt``, shipped by Debian's
``asterisk-core-sounds-en``; when it is missing the prompt file names are turned into words), the
pocketsphinx test transcripts and telephone-call sentences written for this project. The French
bona fide side is Armelle's Asterisk prompts, which ship without transcripts, so French texts are
prompts and call sentences written here in the same style. Digits are left as digits: the
synthesisers read them in their own language.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Default location of the Asterisk English prompt transcripts (Debian asterisk-core-sounds-en).
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

_WORD_FIXES = {
    "vm": "voicemail", "conf": "conference", "pbx": "P B X", "pls": "please", "num": "number",
    "fwd": "forward", "dir": "directory", "priv": "privacy", "tt": "", "ss": "", "pm": "",
    "entr": "enter", "rmv": "remove", "blklist": "blacklist", "ans": "answer", "msg": "message",
    "astcc": "", "ast": "", "a_p": "alpha", "h": "", "mon": "month", "day": "day",
}

EN_CALL_SENTENCES: tuple[str, ...] = (
    "Hello, this is Mark calling from the front desk.",
    "Hi, I am calling about my last invoice.",
    "Good morning, could you put me through to accounts, please?",
    "Thank you for calling, how can I help you today?",
    "I would like to check the balance on my account.",
    "Can you confirm my appointment for Tuesday at ten thirty?",
    "I need to move my appointment to next week, if possible.",
    "My card was declined this morning and I do not know why.",
    "Please send the documents to my new address.",
    "I have been waiting for the delivery since Monday.",
    "The technician said he would call back before noon.",
    "Could you spell your last name for me, please?",
    "I am sorry, the line is very bad, could you repeat that?",
    "Yes, that is correct, thank you very much.",
    "No, I did not authorise that payment.",
    "I would like to speak to a supervisor, please.",
    "Can I pay the remaining amount by bank transfer?",
    "The meeting has been moved to Thursday afternoon.",
    "Please call me back on my mobile after six.",
    "I am calling to report a problem with my internet connection.",
    "Our office is closed on Sundays and public holidays.",
    "I will be at the clinic around a quarter past nine.",
    "Could you read me the reference number again?",
    "I think there is a mistake on my last statement.",
    "Hold on a second, let me find a pen.",
    "We need your date of birth to verify your identity.",
    "Your parcel will arrive between eight and noon.",
    "I would like to cancel my subscription, please.",
    "Can you transfer me to the billing department?",
    "The password reset link did not work for me.",
    "I am travelling abroad next month and need a new card.",
    "My daughter will pick up the prescription tomorrow.",
    "Is the pharmacy open late on Fridays?",
    "I left a message yesterday but nobody called me back.",
    "Please confirm the amount before I make the transfer.",
    "We have received your request and it is being processed.",
    "Could you tell me when the next train leaves?",
    "I am calling on behalf of my father, who is in hospital.",
    "The heating has stopped working in our flat.",
    "Can someone come and check the meter this week?",
    "Have a nice day, and thanks again for your help.",
    "All right, I will wait for your email then.",
    "Sorry, I did not catch your name.",
    "I would like to book a table for four people at eight.",
    "The flight has been delayed by two hours.",
    "I need a taxi to the station as soon as possible.",
    "Please do not share this code with anyone.",
    "Your security code expires in ten minutes.",
    "We noticed an unusual payment on your account.",
    "If you did not make this purchase, press one now.",
)

EN_TEMPLATES: tuple[str, ...] = (
    "My account number is {d4} {d4}.",
    "The reference number is {L}{L} {d3} {d3}.",
    "You can reach me on {d3} {d3} {d4}.",
    "My customer number is {d2} {d3} {d3}.",
    "The amount due is {n} dollars and {d2} cents.",
    "My appointment is on the {day} of {month} at {hour}.",
    "The verification code is {d3} {d3}.",
    "Please call extension {d4}.",
    "The order number is {d4} {d2}.",
    "My postcode is {L}{d1} {d1}{L}{L}.",
    "I paid {n} dollars on {weekday}.",
    "The last four digits of my card are {d4}.",
)

FR_PROMPTS: tuple[str, ...] = (
    "Veuillez saisir votre numéro d'agent, suivi de la touche dièse.",
    "Veuillez saisir votre mot de passe, suivi de la touche dièse.",
    "Mot de passe incorrect.",
    "Merci.",
    "Au revoir.",
    "Bonjour.",
    "Vous êtes maintenant en conférence.",
    "Vous êtes la seule personne dans cette conférence.",
    "La conférence est verrouillée.",
    "La conférence est déverrouillée.",
    "Votre micro est coupé.",
    "Votre micro est rétabli.",
    "Veuillez saisir le numéro de la conférence.",
    "Ce numéro n'est pas valide.",
    "Toutes les lignes sont occupées, veuillez rappeler plus tard.",
    "Votre appel ne peut pas aboutir.",
    "Veuillez vérifier le numéro et recomposer.",
    "Vous avez un nouveau message.",
    "Vous n'avez aucun message.",
    "Pour écouter vos messages, appuyez sur un.",
    "Pour changer de dossier, appuyez sur deux.",
    "Pour les options avancées, appuyez sur trois.",
    "Pour effacer ce message, appuyez sur sept.",
    "Pour sauvegarder ce message, appuyez sur neuf.",
    "Message suivant.",
    "Message précédent.",
    "Message effacé.",
    "Message sauvegardé.",
    "Enregistrez votre message après le bip.",
    "Appuyez sur la touche étoile pour annuler.",
    "Veuillez patienter, nous recherchons votre correspondant.",
    "Votre correspondant n'est pas disponible.",
    "Ne quittez pas, nous transférons votre appel.",
    "Veuillez épeler le nom de la personne que vous souhaitez joindre.",
    "Aucune correspondance trouvée.",
    "Vous êtes le prochain.",
    "Il y a actuellement trois appels en attente.",
    "Le temps d'attente estimé est de cinq minutes.",
    "Choix invalide, veuillez réessayer.",
    "Enregistrement en cours.",
    "Mode lecture.",
    "Mode enregistrement.",
    "Pause.",
    "Poste.",
    "Heure.",
    "Minutes.",
    "Secondes.",
)

FR_WORDS: tuple[str, ...] = (
    "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix",
    "onze", "douze", "treize", "quatorze", "quinze", "seize", "vingt", "trente", "quarante",
    "cinquante", "soixante", "soixante-dix", "quatre-vingts", "quatre-vingt-dix", "cent", "mille",
    "million", "moins", "dièse", "étoile", "lundi", "mardi", "mercredi", "jeudi", "vendredi",
    "samedi", "dimanche", "janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
    "septembre", "octobre", "novembre", "décembre", "premier", "deuxième", "troisième",
    "Alpha", "Bravo", "Charlie", "Delta", "Écho", "Fox-trot", "Golf", "Hôtel", "India",
    "Juliette", "Kilo", "Lima", "Mike", "Novembre", "Oscar", "Papa", "Québec", "Roméo", "Sierra",
    "Tango", "Uniforme", "Victor", "Whisky", "X-ray", "Yankee", "Zoulou", "arobase", "tiret",
    "point", "barre oblique", "plus", "égal", "dollars", "euros",
)

FR_CALL_SENTENCES: tuple[str, ...] = (
    "Bonjour, c'est Julien, je vous appelle au sujet de ma facture.",
    "Bonjour, pourriez-vous me passer le service comptabilité ?",
    "Je voudrais connaître le solde de mon compte.",
    "Pouvez-vous confirmer mon rendez-vous de mardi à dix heures ?",
    "Je dois déplacer mon rendez-vous à la semaine prochaine.",
    "Ma carte a été refusée ce matin, je ne comprends pas pourquoi.",
    "Merci de m'envoyer les documents à ma nouvelle adresse.",
    "J'attends la livraison depuis lundi.",
    "Le technicien doit me rappeler avant midi.",
    "Pouvez-vous épeler votre nom de famille, s'il vous plaît ?",
    "Excusez-moi, la ligne est mauvaise, pouvez-vous répéter ?",
    "Oui, c'est exact, merci beaucoup.",
    "Non, je n'ai pas autorisé ce paiement.",
    "Je voudrais parler à un responsable, s'il vous plaît.",
    "Est-ce que je peux payer le reste par virement ?",
    "La réunion a été déplacée à jeudi après-midi.",
    "Rappelez-moi sur mon portable après dix-huit heures.",
    "J'appelle pour signaler un problème de connexion internet.",
    "Nos bureaux sont fermés le dimanche et les jours fériés.",
    "Je serai au cabinet vers neuf heures et quart.",
    "Pouvez-vous me relire le numéro de dossier ?",
    "Je crois qu'il y a une erreur sur mon dernier relevé.",
    "Attendez une seconde, je cherche un stylo.",
    "Nous avons besoin de votre date de naissance pour vérifier votre identité.",
    "Votre colis arrivera entre huit heures et midi.",
    "Je souhaite résilier mon abonnement.",
    "Pouvez-vous me transférer au service facturation ?",
    "Le lien de réinitialisation du mot de passe ne fonctionne pas.",
    "Je pars à l'étranger le mois prochain et j'ai besoin d'une nouvelle carte.",
    "Ma fille passera chercher l'ordonnance demain.",
    "La pharmacie est-elle ouverte tard le vendredi ?",
    "J'ai laissé un message hier mais personne ne m'a rappelé.",
    "Merci de confirmer le montant avant que je fasse le virement.",
    "Nous avons bien reçu votre demande, elle est en cours de traitement.",
    "Le chauffage ne fonctionne plus dans notre appartement.",
    "Quelqu'un peut-il passer relever le compteur cette semaine ?",
    "Bonne journée, et merci encore pour votre aide.",
    "D'accord, j'attends votre courriel alors.",
    "Je voudrais réserver une table pour quatre personnes à vingt heures.",
    "Le vol a deux heures de retard.",
    "Ne communiquez ce code à personne.",
    "Votre code de sécurité expire dans dix minutes.",
    "Nous avons remarqué un paiement inhabituel sur votre compte.",
    "Si vous n'êtes pas à l'origine de cet achat, appuyez sur un.",
)

FR_TEMPLATES: tuple[str, ...] = (
    "Mon numéro de compte est le {d4} {d4}.",
    "La référence du dossier est {L}{L} {d3} {d3}.",
    "Vous pouvez me joindre au {d2} {d2} {d2} {d2} {d2}.",
    "Mon numéro client est le {d2} {d3} {d3}.",
    "Le montant dû est de {n} euros et {d2} centimes.",
    "Mon rendez-vous est le {day} {month_fr} à {hour} heures.",
    "Le code de vérification est {d3} {d3}.",
    "Composez le poste {d4}.",
    "Le numéro de commande est le {d4} {d2}.",
)

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
              "septembre", "octobre", "novembre", "décembre")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "tenth", "twelfth", "twentieth")
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def prompt_words(name: str) -> str:
    """Turn an Asterisk prompt file name into words (``all-circuits-busy-now`` -> text).

    Folder prefixes (``digits/``, ``letters/``, ``phonetic/``) are dropped, dashes and underscores
    become spaces and common abbreviations (``vm``, ``conf``, ``pls``) are spelled out.
    """
    stem = name.rsplit("/", 1)[-1]
    if stem.endswith("_p") and len(stem) == 3:
        return _NATO.get(stem[0], stem[0])
    words = []
    for token in re.split(r"[-_\s]+", stem):
        fixed = _WORD_FIXES.get(token.lower(), token)
        if fixed:
            words.append(fixed)
    return " ".join(words)


_NATO = dict(zip("abcdefghijklmnopqrstuvwxyz", (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "x-ray", "yankee", "zulu"), strict=True))


def clean_transcript(text: str) -> str:
    """Make a transcript line readable by a synthesiser; empty for non-speech entries."""
    text = re.sub(r"\[[^\]]*\]", " ", text)  # "[beep tone]", "dash [-]"
    text = text.replace("*", " star ").replace("#", " pound ").replace("...", ".")
    return re.sub(r"\s+", " ", text).strip()


def load_asterisk_transcripts(path: Path = ASTERISK_TRANSCRIPTS) -> dict[str, str]:
    """Read ``core-sounds-en.txt(.gz)`` as ``{"digits/0": "zero", ...}``; empty when missing."""
    if not path.is_file():
        return {}
    opener = gzip.open if path.suffix == ".gz" else open
    table: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(";") or ":" not in line:
                continue
            key, _, text = line.partition(":")
            cleaned = clean_transcript(text)
            if cleaned:
                table[key.strip()] = cleaned
    return table


def read_sphinx_transcripts(path: Path) -> dict[str, str]:
    """Read a pocketsphinx ``transcription`` file as ``{file id: text}``."""
    table: dict[str, str] = {}
    if not path.is_file():
        return table
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"\s*(.*?)\s*\(([^)]+)\)\s*$", line)
        if m:
            text = re.sub(r"</?s>", " ", m.group(1))
            table[m.group(2).strip()] = re.sub(r"\s+", " ", text).strip()
    return table


def sentence_case(text: str) -> str:
    """Capitalise and end with a full stop (for lower-case ASR transcripts)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def _fill(template: str, rng: np.random.Generator) -> str:
    def digits(n: int) -> str:
        return " ".join(str(int(d)) for d in rng.integers(0, 10, size=n))

    values = {
        "d1": digits(1), "d2": digits(2), "d3": digits(3), "d4": digits(4),
        "L": "", "n": str(int(rng.integers(12, 990))),
        "day": _ORDINALS[int(rng.integers(len(_ORDINALS)))],
        "month": _MONTHS[int(rng.integers(12))], "month_fr": _MONTHS_FR[int(rng.integers(12))],
        "hour": str(int(rng.integers(8, 19))), "weekday": _WEEKDAYS[int(rng.integers(7))],
    }
    out = template
    while "{L}" in out:
        out = out.replace("{L}", _LETTERS[int(rng.integers(len(_LETTERS)))] + " ", 1)
    return re.sub(r"\s+", " ", out.format(**values)).strip()


class TextPool:
    """Draws spoof texts for one language from weighted groups of sentences.

    Args:
        groups: ``(weight, texts)`` pairs; a group is picked by weight, then a text uniformly.
        templates: sentence templates with ``{d4}``-style slots filled with random digits.
        template_weight: weight of the template group.
    """

    def __init__(self, groups: Sequence[tuple[float, Sequence[str]]],
                 templates: Sequence[str] = (), template_weight: float = 0.0) -> None:
        self._groups = [(w, tuple(t)) for w, t in groups if t and w > 0]
        self._templates = tuple(templates)
        weights = [w for w, _ in self._groups]
        if self._templates and template_weight > 0:
            weights.append(template_weight)
        total = float(sum(weights))
        self._p = np.asarray(weights, dtype=float) / total

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        """Return ``n`` texts."""
        out = []
        for _ in range(n):
            g = int(rng.choice(len(self._p), p=self._p))
            if g == len(self._groups):
                out.append(_fill(self._templates[int(rng.integers(len(self._templates)))], rng))
            else:
                texts = self._groups[g][1]
                out.append(texts[int(rng.integers(len(texts)))])
        return out


def _phrases(sentence: str, limit: int = 110) -> list[str]:
    """Cut a sentence longer than ``limit`` characters at commas into shorter phrases."""
    if len(sentence) <= limit:
        return [sentence]
    out, cur = [], ""
    for piece in re.split(r"(?<=,)\s+", sentence):
        if cur and len(cur) + len(piece) > limit:
            out.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}".strip()
    return [*out, cur] if cur else out


def sentences(texts: Sequence[str]) -> list[str]:
    """Split texts into sentences and long sentences into phrases (IVR menus become several).

    Long recordings are cut at pauses the same way, so neither class has very long clips.
    """
    return [phrase for t in texts for part in re.split(r"(?<=[.?!])\s+", t)
            if re.search(r"\w", part) for phrase in _phrases(part.strip())]


def english_pool(prompt_texts: Sequence[str], sphinx_texts: Sequence[str]) -> TextPool:
    """English texts: the bona fide prompt transcripts, pocketsphinx transcripts, call talk."""
    return TextPool([(0.5, sentences(prompt_texts)),
                     (0.1, [sentence_case(t) for t in sphinx_texts]),
                     (0.25, EN_CALL_SENTENCES)], EN_TEMPLATES, 0.15)


def french_pool() -> TextPool:
    """French texts: IVR prompts, single words (digits, letters, dates) and call talk."""
    return TextPool([(0.3, FR_PROMPTS), (0.2, FR_WORDS), (0.35, FR_CALL_SENTENCES)],
                    FR_TEMPLATES, 0.15)
